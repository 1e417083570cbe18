package client

import (
	"crypto/tls"

	"google.golang.org/grpc"

	"github.com/pagewire/pagewire/internal/wire"
)

// Dial connects to the node whose URL is rawURL ("http://host:port" in
// plaintext, "https://host:port" with TLS; IPv6 literals in brackets). The
// connection keeps itself alive so that a dead peer is noticed within
// seconds. Options add a token and TLS settings.
func Dial(rawURL string, opts ...Option) (*grpc.ClientConn, error) {
	var creds wire.Credentials
	for _, o := range opts {
		o(&creds)
	}
	return wire.Dial(rawURL, creds)
}

// Option is a setting of Dial.
type Option func(*wire.Credentials)

// WithToken sends token as "authorization: Bearer <token>" on every call:
// what a node with auth.token set requires. An empty token sends nothing.
func WithToken(token string) Option {
	return func(c *wire.Credentials) { c.Token = token }
}

// WithTLS sets the TLS configuration for https:// URLs: the CA to trust
// (RootCAs) and, for a node that requires client certificates, the
// certificate to present. config is called for every new connection, so
// it may return rotated certificates; without WithTLS, https:// URLs
// trust the system's roots.
func WithTLS(config func() *tls.Config) Option {
	return func(c *wire.Credentials) { c.TLS = config }
}
