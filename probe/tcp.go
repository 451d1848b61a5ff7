package probe

import (
	"context"
	"net"
)

// TCP is ready when a TCP connection to its address opens. It suits proxies
// whose only sign of life is a listening port, such as an inbound listener.
type TCP struct {
	spec       string
	host, port string
	dialer     net.Dialer
}

// Check opens a connection and closes it again.
func (t *TCP) Check(ctx context.Context) error {
	c, err := dial(ctx, &t.dialer, t.host, t.port)
	if err != nil {
		return err
	}
	return c.Close()
}

func (t *TCP) String() string { return t.spec }
