package webhook

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Certs serves a TLS certificate from a pair of PEM files and reloads it
// when either file changes, the way cert-manager and the kubelet rotate a
// Secret volume (a new ..data symlink over new files). The check is one
// stat of each file per TLS handshake, so a rotation is seen by the next
// connection, and connections already open keep the certificate they
// shook hands with: nothing is dropped.
type Certs struct {
	CertFile, KeyFile string
	// Log is nil for zap.NewNop().
	Log *zap.Logger

	mu   sync.Mutex
	cert *tls.Certificate
	seen [2]fileID
}

// fileID tells whether a file changed: a rotation writes new files (new
// inode) or rewrites them (new size or time).
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    time.Time
}

func stat(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	id := fileID{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(st.Dev), st.Ino
	}
	return id, nil
}

// Load reads the pair; the server calls it once before it listens, so
// that a bad file is an error at start.
func (c *Certs) Load() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.reload()
	return err
}

// reload reads the files if they changed since the last read; it tells
// whether it read a new pair. Held: c.mu.
func (c *Certs) reload() (bool, error) {
	certID, err := stat(c.CertFile)
	if err != nil {
		return false, fmt.Errorf("tls certificate: %w", err)
	}
	keyID, err := stat(c.KeyFile)
	if err != nil {
		return false, fmt.Errorf("tls key: %w", err)
	}
	if c.cert != nil && c.seen == [2]fileID{certID, keyID} {
		return false, nil
	}
	pair, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return false, fmt.Errorf("tls pair %s, %s: %w", c.CertFile, c.KeyFile, err)
	}
	c.cert, c.seen = &pair, [2]fileID{certID, keyID}
	return true, nil
}

// GetCertificate is for tls.Config: the current pair, read again if its
// files changed. A pair caught half-written (the key of the new one with
// the certificate of the old) is not taken: the previous one serves until
// both files match.
func (c *Certs) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fresh, err := c.reload()
	if err != nil {
		if c.cert == nil {
			return nil, err
		}
		c.log().Warn("tls pair not reloaded", zap.Error(err))
		return c.cert, nil
	}
	if fresh {
		c.log().Info("tls pair loaded", zap.String("cert", c.CertFile), zap.Time("not_after", c.cert.Leaf.NotAfter))
	}
	return c.cert, nil
}

// Ready tells whether a pair is loaded.
func (c *Certs) Ready() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert == nil {
		return errors.New("no tls pair loaded")
	}
	return nil
}

func (c *Certs) log() *zap.Logger {
	if c.Log == nil {
		return zap.NewNop()
	}
	return c.Log
}
