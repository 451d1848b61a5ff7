package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Server serves the webhook over TLS: POST /mutate, and GET /healthz
// (the process is up) and /readyz (a certificate is loaded and the server
// is not draining) for the kubelet's probes.
type Server struct {
	Handler *Handler
	Certs   *Certs
	// Log is nil for zap.NewNop().
	Log *zap.Logger
	// Drain is how long Serve keeps serving after ctx ends, with /readyz
	// failing, so that endpoints drop the pod before it stops listening;
	// then open requests get up to Grace to finish. Zero means none.
	Drain, Grace time.Duration
	// After is nil for time.After; it times the drain.
	After func(time.Duration) <-chan time.Time

	draining atomic.Bool
}

// Mux routes the webhook's paths.
func (s *Server) Mux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("POST /mutate", s.Handler)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.Certs.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if s.draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// Serve loads the certificate, serves on ln until ctx ends, then drains
// and shuts down. It returns nil after a clean shutdown.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	log := s.Log
	if log == nil {
		log = zap.NewNop()
	}
	if err := s.Certs.Load(); err != nil {
		return err
	}
	srv := &http.Server{
		Handler: s.Mux(),
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: s.Certs.GetCertificate,
			NextProtos:     []string{"h2", "http/1.1"},
		},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       90 * time.Second,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	log.Info("serving", zap.String("addr", ln.Addr().String()))

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.draining.Store(true)
	after := s.After
	if after == nil {
		after = time.After
	}
	if s.Drain > 0 {
		log.Info("draining", zap.Duration("for", s.Drain))
		select {
		case <-after(s.Drain):
		case err := <-errc:
			return err
		}
	}
	var err error
	if s.Grace > 0 {
		sctx, cancel := context.WithTimeout(context.Background(), s.Grace)
		defer cancel()
		err = srv.Shutdown(sctx)
	} else {
		err = srv.Close()
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	log.Info("stopped")
	return err
}
