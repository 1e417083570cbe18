package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// Defaults that DefaultConfig sets, LiteFS's.
const (
	DefaultMaxLag                 = 10 * time.Second
	DefaultPrimaryRedirectTimeout = 5 * time.Second
	DefaultReadHeaderTimeout      = 10 * time.Second
	DefaultIdleTimeout            = 30 * time.Second
)

// Config configures a Proxy. Build one with DefaultConfig and fill in Target,
// DB and Node (and Addr to use Run); a zero Config does not validate.
type Config struct {
	// Addr is the address Run listens on, e.g. ":8080" (IPv4 and IPv6).
	// Required for Run; ServeHTTP does not use it.
	Addr string
	// Target is the app's host:port, e.g. "localhost:8081". Required.
	Target string
	// DB is the name of the database whose TXID the __txid cookie carries.
	// Required.
	DB string
	// Passthrough holds path patterns sent to the local app untouched: no
	// wait for __txid, no forwarding, no cookie. '*' is the only wildcard and
	// matches any run of characters, '/' included; a pattern matches the
	// whole URL path. Passthrough wins over AlwaysForward.
	Passthrough []string
	// AlwaysForward holds path patterns, as Passthrough, that a replica
	// forwards to the primary whatever the method.
	AlwaysForward []string
	// MaxLag bounds how long a replica waits to catch up with a request's
	// __txid before answering 504, and is the lag past which the health
	// route reports unhealthy. Must be > 0; DefaultConfig sets
	// DefaultMaxLag, as in LiteFS's config.
	MaxLag time.Duration
	// PrimaryRedirectTimeout bounds how long a replica waits for a primary
	// to be known before answering a write with 503. Must be > 0;
	// DefaultConfig sets DefaultPrimaryRedirectTimeout.
	PrimaryRedirectTimeout time.Duration
	// ReadTimeout, ReadHeaderTimeout, WriteTimeout and IdleTimeout are
	// Run's server timeouts (proxy.read-timeout, ...), with net/http's
	// meanings: 0 is no limit, except that ReadHeaderTimeout and
	// IdleTimeout of 0 take ReadTimeout's value. Each must be >= 0;
	// DefaultConfig sets LiteFS's: no read or write limit, 10s for a
	// request's headers, 30s for an idle kept-alive connection. A
	// WriteTimeout under MaxLag cuts reads that wait for __txid; an upgraded
	// (WebSocket) connection is bound by none of them. Every node should
	// have the same IdleTimeout: a replica keeps idle connections to the
	// primary's proxy for less than half of its own.
	ReadTimeout       time.Duration
	ReadHeaderTimeout time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	// TrustedProxies are the addresses of proxies in front of this one
	// (proxy.trusted-proxies), such as a load balancer: the X-Forwarded-For,
	// -Host and -Proto of a request from them are kept, and this hop is
	// added. From any other client they are replaced with what this proxy
	// sees: the client's address, the Host it asked for, the scheme. Another
	// node's proxy forwarding a write to this one is trusted as well when
	// Node is a PeerNode that knows its address. Nil: trust none.
	TrustedProxies []netip.Prefix
	// FlyAppName is Fly.io's FLY_APP_NAME. When set, a replica answers a
	// write with a fly-replay header naming the primary instead of
	// forwarding it, so that Fly's edge replays it there.
	FlyAppName string
	// Hostname names this node in the Pagewire-Forwarded-By header of the
	// writes it forwards; "" means os.Hostname().
	Hostname string
	// Node is the node the proxy runs on. Required.
	Node Node
	// Logger receives the proxy's logs; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns a Config with LiteFS's defaults: max-lag 10s,
// primary-redirect-timeout 5s, read-header-timeout 10s, idle-timeout 30s,
// no read or write timeout.
func DefaultConfig() Config {
	return Config{
		MaxLag:                 DefaultMaxLag,
		PrimaryRedirectTimeout: DefaultPrimaryRedirectTimeout,
		ReadHeaderTimeout:      DefaultReadHeaderTimeout,
		IdleTimeout:            DefaultIdleTimeout,
	}
}

// Validate reports every problem with c, each naming the proxy.* key to fix.
func (c Config) Validate() error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}

	// The addresses: the proxy's own, and the app's host:port.
	if c.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			fail(`proxy.addr %q is not a host:port: use e.g. ":8080"`, c.Addr)
		}
	}
	if c.Target == "" {
		fail(`proxy.target is required when proxy.addr is set: set it to your app's host:port, e.g. "localhost:8081"`)
	} else if host, port, err := net.SplitHostPort(c.Target); err != nil || port == "" {
		fail(`proxy.target %q is not a host:port: set it to your app's address, e.g. "localhost:8081"`, c.Target)
	} else if host == "" {
		// ":8081" would dial the local host anyway; say so rather than guess.
		fail(`proxy.target %q has no host: use e.g. "localhost%s"`, c.Target, c.Target)
	}
	if c.DB == "" {
		fail(`proxy.db is required when proxy.addr is set: set it to the name of the database your app writes, e.g. "app.db"`)
	}

	// Path patterns must not be empty.
	for i, p := range c.Passthrough {
		if p == "" {
			fail("proxy.passthrough[%d] is empty: remove it or set a path pattern such as \"/static/*\"", i)
		}
	}
	for i, p := range c.AlwaysForward {
		if p == "" {
			fail("proxy.always-forward[%d] is empty: remove it or set a path pattern such as \"/admin/*\"", i)
		}
	}

	// Durations must be positive.
	if c.MaxLag <= 0 {
		fail(`proxy.max-lag is %s: use a positive duration such as "10s"`, c.MaxLag)
	}
	if c.PrimaryRedirectTimeout <= 0 {
		fail(`proxy.primary-redirect-timeout is %s: use a positive duration such as "5s"`, c.PrimaryRedirectTimeout)
	}
	for _, t := range []struct {
		key string
		d   time.Duration
	}{
		{"proxy.read-timeout", c.ReadTimeout},
		{"proxy.read-header-timeout", c.ReadHeaderTimeout},
		{"proxy.write-timeout", c.WriteTimeout},
		{"proxy.idle-timeout", c.IdleTimeout},
	} {
		if t.d < 0 {
			fail(`%s is %s: use 0 or a positive duration such as "30s"`, t.key, t.d)
		}
	}
	for i, p := range c.TrustedProxies {
		if !p.IsValid() {
			fail("proxy.trusted-proxies[%d] is not a valid prefix: use a CIDR such as \"10.0.0.0/8\"", i)
		}
	}
	if c.Node == nil {
		fail("proxy: Config.Node is nil: pass the node the proxy runs on")
	}
	return errors.Join(errs...)
}

// serverIdleTimeout is how long Run's server keeps an idle kept-alive
// connection, as net/http reads the config; 0: for ever.
func (c Config) serverIdleTimeout() time.Duration {
	if c.IdleTimeout > 0 {
		return c.IdleTimeout
	}
	return c.ReadTimeout
}

// forwardIdleTimeout is how long a replica keeps an unused connection to
// the primary's proxy: less than half of the primary's idle timeout
// (taken to be this node's), so that a write is not sent on a connection
// the primary is closing (a POST is not retried on another).
func (c Config) forwardIdleTimeout() time.Duration {
	if idle := c.serverIdleTimeout(); idle > 0 {
		return min(idleConnTimeout, idle/2)
	}
	return idleConnTimeout
}
