package server

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/internal/wire"
)

// Limits bound what clients of the network listener (http.addr) can hold:
// connections, time and gRPC streams. Neither the in-process channel nor
// the storage socket has them. DefaultLimits sets every value; each must
// be > 0.
//
// What is bound where: the port splitter closes a connection that has not
// shown within HandshakeTimeout whether it is HTTP/1, HTTP/2 or gRPC. HTTP
// API requests then get net/http's timeouts; a handler that may run longer
// than WriteTimeout moves its own deadline (see extendWrite). gRPC
// connections get keepalive instead: a healthy replication stream is never
// cut, an idle connection is closed, a dead peer is noticed.
type Limits struct {
	// MaxConns bounds the connections open on the listener; one accepted
	// over it is closed at once. MaxConnsPerIP bounds one client address's
	// share, so that one host cannot take them all.
	MaxConns      int
	MaxConnsPerIP int
	// HandshakeTimeout bounds how long a new connection may take to send
	// its first bytes, and an HTTP/2 one its preface.
	HandshakeTimeout time.Duration

	// The HTTP API's server timeouts, as net/http's: the headers of a
	// request, the whole request, the response (from the end of the
	// headers), and a kept-alive connection between requests.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration

	// GRPCMaxConnectionIdle closes (with GOAWAY) a gRPC connection that
	// has had no call for so long; its client reconnects on its next call.
	GRPCMaxConnectionIdle time.Duration
	// GRPCKeepaliveTime and GRPCKeepaliveTimeout: after GRPCKeepaliveTime
	// without a frame from the client the server pings it, and closes the
	// connection if no answer comes within GRPCKeepaliveTimeout.
	GRPCKeepaliveTime    time.Duration
	GRPCKeepaliveTimeout time.Duration
	// MaxConcurrentStreams bounds the calls open on one gRPC connection. A
	// replica holds one stream per database plus one on a single
	// connection: a node with more databases than this needs a higher
	// value, or replication of the rest waits.
	MaxConcurrentStreams uint32
}

// DefaultLimits returns the Limits a node runs with.
func DefaultLimits() Limits {
	return Limits{
		MaxConns:              4096,
		MaxConnsPerIP:         256,
		HandshakeTimeout:      10 * time.Second,
		ReadHeaderTimeout:     10 * time.Second,
		ReadTimeout:           time.Minute, // API bodies are at most maxAPIBody
		WriteTimeout:          time.Minute,
		IdleTimeout:           time.Minute,
		GRPCMaxConnectionIdle: 5 * time.Minute,
		GRPCKeepaliveTime:     30 * time.Second,
		GRPCKeepaliveTimeout:  10 * time.Second,
		MaxConcurrentStreams:  10_000,
	}
}

// validate reports the first value that is not > 0.
func (l Limits) validate() error {
	switch {
	case l.MaxConns <= 0, l.MaxConnsPerIP <= 0:
		return errors.New("server: Limits.MaxConns and MaxConnsPerIP must be > 0")
	case l.HandshakeTimeout <= 0:
		return errors.New("server: Limits.HandshakeTimeout must be > 0")
	case l.ReadHeaderTimeout <= 0, l.ReadTimeout <= 0, l.WriteTimeout <= 0, l.IdleTimeout <= 0:
		return errors.New("server: Limits' HTTP timeouts must be > 0")
	case l.GRPCMaxConnectionIdle <= 0, l.GRPCKeepaliveTime <= 0, l.GRPCKeepaliveTimeout <= 0:
		return errors.New("server: Limits' gRPC keepalive durations must be > 0")
	case l.MaxConcurrentStreams == 0:
		return errors.New("server: Limits.MaxConcurrentStreams must be > 0")
	}
	return nil
}

// grpcOptions are the network gRPC server's options for l.
func (l Limits) grpcOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		// Clients ping every wire.KeepaliveTime, with or without a call
		// open (internal/wire's Dial): allow it, with room for jitter. A
		// client that pings more often is sent GOAWAY.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: wire.KeepaliveTime / 2, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: l.GRPCMaxConnectionIdle,
			Time:              l.GRPCKeepaliveTime,
			Timeout:           l.GRPCKeepaliveTimeout,
		}),
		grpc.MaxConcurrentStreams(l.MaxConcurrentStreams),
		// The HTTP/2 handshake, after the port splitter has replayed what
		// it read.
		grpc.ConnectionTimeout(l.HandshakeTimeout),
	}
}

// apply sets l's timeouts on the HTTP API's server.
func (l Limits) apply(srv *http.Server) {
	srv.ReadHeaderTimeout = l.ReadHeaderTimeout
	srv.ReadTimeout = l.ReadTimeout
	srv.WriteTimeout = l.WriteTimeout
	srv.IdleTimeout = l.IdleTimeout
	srv.MaxHeaderBytes = maxAPIHeaderBytes
}

// maxAPIHeaderBytes bounds a request's headers on the HTTP API: a token
// and a few short headers fit many times over.
const maxAPIHeaderBytes = 64 << 10

// extendWrite lets a handler that may run past Limits.WriteTimeout (a
// halt lock's wait, a verify of a large database) answer: its response may
// be written until d from now; d <= 0 lifts the deadline. Its answer must
// be small, as a client that does not read it then holds the handler.
func extendWrite(w http.ResponseWriter, d time.Duration) {
	var deadline time.Time
	if d > 0 {
		deadline = time.Now().Add(d)
	}
	_ = http.NewResponseController(w).SetWriteDeadline(deadline)
}

// Log keys of the connection limiter.
const (
	logKeyLimit        = "limit"          // which limit: total or per_ip
	logKeyOpen         = "open"           // connections open
	logKeyOpenFromAddr = "open_from_addr" // connections open from one address
	logKeyRefused      = "refused"        // connections refused since the last log line
)

// connLimiter is a listener that closes, as soon as they are accepted,
// connections over its limits: in all, and from one client address.
type connLimiter struct {
	net.Listener
	max, perIP int
	log        *slog.Logger
	open       prometheus.Gauge
	refused    *prometheus.CounterVec

	mu       sync.Mutex // guards n, byIP, warned
	n        int
	byIP     map[netip.Addr]int
	warned   time.Time // when refusing was last logged
	refusals int       // since then
}

func newConnLimiter(ln net.Listener, l Limits, log *slog.Logger, reg prometheus.Registerer) *connLimiter {
	c := &connLimiter{Listener: ln, max: l.MaxConns, perIP: l.MaxConnsPerIP, log: log, byIP: map[netip.Addr]int{},
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pagewire_api_connections_open",
			Help: "Connections open on http.addr.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pagewire_api_connections_refused_total",
			Help: "Connections to http.addr closed at once: too many open in all (limit=\"total\") or from one address (limit=\"per_ip\").",
		}, []string{"limit"}),
	}
	reg.MustRegister(c.open, c.refused)
	return c
}

// Accept returns the next connection within the limits.
func (c *connLimiter) Accept() (net.Conn, error) {
	for {
		conn, err := c.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := ipOf(conn.RemoteAddr())
		if c.take(ip) {
			return &limitedConn{Conn: conn, release: func() { c.release(ip) }}, nil
		}
		_ = conn.Close()
	}
}

// take counts a connection from ip, or reports false if it is one too many.
func (c *connLimiter) take(ip netip.Addr) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	limit := ""
	switch {
	case c.n >= c.max:
		limit = "total"
	case ip.IsValid() && c.byIP[ip] >= c.perIP:
		limit = "per_ip"
	}
	if limit != "" {
		c.refused.WithLabelValues(limit).Inc()
		c.refusals++
		if now := time.Now(); now.Sub(c.warned) >= time.Minute {
			c.log.Warn("closing new connections to http.addr: too many are open; idle ones are closed by timeouts (see pagewire_api_connections_refused_total)",
				logkey.Addr, ip.String(), logKeyLimit, limit, logKeyOpen, c.n, logKeyOpenFromAddr, c.byIP[ip], logKeyRefused, c.refusals)
			c.warned, c.refusals = now, 0
		}
		return false
	}
	c.n++
	if ip.IsValid() {
		c.byIP[ip]++
	}
	c.open.Inc()
	return true
}

func (c *connLimiter) release(ip netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n--
	if ip.IsValid() {
		if c.byIP[ip]--; c.byIP[ip] <= 0 {
			delete(c.byIP, ip)
		}
	}
	c.open.Dec()
}

// limitedConn gives its place back when it is closed.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// ipOf returns the IP address of a TCP peer, IPv4 as IPv4, without zone;
// the zero Addr for any other kind of address.
func ipOf(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(t.IP)
		return ip.Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap().WithZone("")
}
