package main

import (
	"flag"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"

	"github.com/pagewire/pagewire/config"
	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/internal/tlsfiles"
	"github.com/pagewire/pagewire/internal/wire"
)

// secure reads the tls section's files and settles what the node shows
// the nodes it calls: the first auth.token, and its TLS files.
func (n *node) secure() error {
	t := n.cfg.TLS
	if len(n.cfg.Auth.Token) > 0 {
		n.creds.Token = n.cfg.Auth.Token[0]
	}
	if t.Cert == "" && t.CA == "" {
		return nil
	}
	files, err := tlsfiles.Load(t.Cert, t.Key, t.CA, n.log)
	if err != nil {
		return fmt.Errorf("%w: fix the tls section's files", err)
	}
	n.creds.TLS = files.Client
	if files.HasCert() {
		auth := tlsfiles.NoClientCert
		if t.ClientAuth == config.ClientAuthRequire {
			auth = tlsfiles.RequireClientCert
		}
		if n.serverTLS, err = files.Server(auth); err != nil {
			return err
		}
	}
	return nil
}

// dialFunc connects to the node at a URL.
type dialFunc func(url string) (*grpc.ClientConn, error)

// dial connects to another node, showing it the node's token and TLS
// certificate.
func (n *node) dial(url string) (*grpc.ClientConn, error) { return wire.Dial(url, n.creds) }

// warnExposure logs, once, what a port reachable from the network exposes
// and to whom.
func (n *node) warnExposure(addr *net.TCPAddr) {
	if addr.IP.IsLoopback() {
		return
	}
	switch {
	case len(n.cfg.Auth.Token) == 0:
		n.log.Warn("http.addr is reachable from the network and auth.token is not set: "+
			"AdminService, ReplicationService and the HTTP API (read every database, export, import, halt, handoff) answer anyone who reaches it; "+
			"set auth.token, or set http.addr to a loopback address such as 127.0.0.1:20202 on a single node",
			logkey.Addr, addr.String())
	case n.serverTLS == nil:
		n.log.Info("http.addr requires auth.token but speaks plaintext: tokens and data cross the network unencrypted; "+
			"fine on an encrypted private network (Fly's 6PN is WireGuard), otherwise set tls.cert and tls.key",
			logkey.Addr, addr.String())
	}
}

// remote is how a CLI command reaches a node: -url, and the token and
// TLS files it shows the node. Each falls back to an environment variable.
type remote struct {
	url, token, ca, cert, key *string
}

// addRemoteFlags adds -url (described by urlUsage), -token and -tls-* to
// fset.
func addRemoteFlags(fset *flag.FlagSet, urlUsage string) *remote {
	def := defaultURL
	if u := os.Getenv("PAGEWIRE_URL"); u != "" {
		def = u
	}
	return &remote{
		url:   fset.String("url", def, urlUsage+" (or $PAGEWIRE_URL)"),
		token: fset.String("token", "", "bearer token, for a node with auth.token set (default $PAGEWIRE_TOKEN)"),
		ca:    fset.String("tls-ca", "", "PEM CA bundle to trust for https:// URLs (default $PAGEWIRE_TLS_CA, else the system's roots)"),
		cert:  fset.String("tls-cert", "", "PEM client certificate, for a node with tls.client-auth: require (default $PAGEWIRE_TLS_CERT)"),
		key:   fset.String("tls-key", "", "the client certificate's PEM key (default $PAGEWIRE_TLS_KEY)"),
	}
}

// orEnv is the flag's value, or the environment variable's.
func orEnv(flagValue *string, env string) string {
	if *flagValue != "" {
		return *flagValue
	}
	return os.Getenv(env)
}

// dial connects to the node at rawURL (the -url, or one it named).
func (r *remote) dial(rawURL string) (*grpc.ClientConn, error) {
	creds := wire.Credentials{Token: orEnv(r.token, "PAGEWIRE_TOKEN")}
	ca, cert, key := orEnv(r.ca, "PAGEWIRE_TLS_CA"), orEnv(r.cert, "PAGEWIRE_TLS_CERT"), orEnv(r.key, "PAGEWIRE_TLS_KEY")
	if ca != "" || cert != "" || key != "" {
		files, err := tlsfiles.Load(cert, key, ca, nil)
		if err != nil {
			return nil, fmt.Errorf("-tls-*: %w", err)
		}
		creds.TLS = files.Client
	}
	conn, err := wire.Dial(rawURL, creds)
	if err != nil {
		return nil, fmt.Errorf("-url: %w", err)
	}
	return conn, nil
}
