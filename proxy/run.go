package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"

	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/internal/safego"
)

// Run listens on cfg.Addr and serves until ctx ends, then shuts down: it
// stops accepting, lets running requests finish for up to 5s, cuts off the
// rest (upgraded WebSocket connections too), waits for every handler and
// returns nil. ":port" listens on IPv4 and IPv6. Call Run once.
func (p *Proxy) Run(ctx context.Context) error {
	if p.cfg.Addr == "" {
		return errors.New(`proxy.addr is not set: set it to the address clients connect to, e.g. ":8080"`)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", p.cfg.Addr)
	if err != nil {
		return fmt.Errorf("proxy: listen on proxy.addr %q: %w: stop what uses that port or set proxy.addr to a free one", p.cfg.Addr, err)
	}
	return p.serve(ctx, ln)
}

// Addr returns the address Run listens on, once it has started listening,
// and nil before: with proxy.addr ":0", the port the system picked.
func (p *Proxy) Addr() net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

// serve is Run on a listener it closes.
func (p *Proxy) serve(ctx context.Context, ln net.Listener) error {
	// Publish the address for Addr.
	p.mu.Lock()
	p.addr = ln.Addr()
	p.mu.Unlock()

	// Requests run on base, not ctx, so that they can finish after ctx ends;
	// abort ends the ones that outlive the shutdown.
	base, abort := context.WithCancel(context.WithoutCancel(ctx))
	defer abort()
	var (
		mu       sync.Mutex // guards stopping; handlers.Add happens only under it
		stopping bool
		handlers sync.WaitGroup // every running ServeHTTP, hijacked ones too
	)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			if stopping {
				mu.Unlock()
				http.Error(w, "pagewire proxy: shutting down; retry", http.StatusServiceUnavailable)
				return
			}
			handlers.Add(1)
			mu.Unlock()
			defer handlers.Done()
			p.ServeHTTP(w, r)
		}),
		BaseContext: func(net.Listener) context.Context { return base },
		// proxy.*-timeout; net/http clears them on an upgraded connection.
		ReadTimeout:       p.cfg.ReadTimeout,
		ReadHeaderTimeout: p.cfg.ReadHeaderTimeout,
		WriteTimeout:      p.cfg.WriteTimeout,
		IdleTimeout:       p.cfg.IdleTimeout,
		ErrorLog:          p.errorLog,
	}
	if p.cfg.ReadHeaderTimeout <= 0 && p.cfg.ReadTimeout <= 0 {
		p.log.Warn("proxy.read-header-timeout and proxy.read-timeout are 0: a client may hold a connection open by sending its request slowly; set proxy.read-header-timeout, e.g. to \"10s\"")
	}
	p.log.Info("proxy listening", logkey.Addr, ln.Addr().String(), logKeyTarget, p.cfg.Target, logkey.DB, p.cfg.DB)

	// Serve until ctx ends or the server fails.
	errc := make(chan error, 1)
	go func() { errc <- safego.Call(p.log, "serve the proxy", func() error { return srv.Serve(ln) }) }()
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}

	// Shut down: let running requests finish, then cut off the rest.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	if err := srv.Shutdown(shutdownCtx); err != nil {
		p.log.Warn("requests still running after the shutdown timeout; cutting them off", logKeyTimeout, shutdownTimeout.String())
	}
	cancel()
	_ = srv.Close()
	abort() // Shutdown does not wait for hijacked (WebSocket) connections: end them
	mu.Lock()
	stopping = true
	mu.Unlock()
	handlers.Wait()

	// Collect Serve's result and drop idle upstream connections.
	if serveErr == nil {
		serveErr = <-errc
	}
	p.appTransport.CloseIdleConnections()
	p.primaryTransport.CloseIdleConnections()
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("proxy: serve on %s: %w", ln.Addr(), serveErr)
	}
	p.log.Info("proxy stopped", logkey.Addr, ln.Addr().String())
	return nil
}
