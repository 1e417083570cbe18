package wire

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"

	"github.com/pagewire/pagewire/internal/bufpool"
)

// bufPool serves every connection's buffers, and codec its messages'
// buffers, without zeroing them.
var (
	bufPool = bufpool.New()
	codec   = bufpool.NewCodec(bufPool)
)

// KeepaliveTime is how often a connection from Dial pings the node, with
// or without a call open; the node's server allows pings this often.
const KeepaliveTime = 10 * time.Second

// Credentials are what a caller shows a node: a bearer token, and for
// https:// URLs the TLS configuration. The zero value sends no token and
// trusts the system's roots.
type Credentials struct {
	// Token is sent as "authorization: Bearer <token>" on every call; ""
	// sends none.
	Token string
	// TLS returns the configuration for each new TLS connection (so that
	// rotated files are used); nil: the system's roots, no client
	// certificate.
	TLS func() *tls.Config
}

// Dial connects to the node whose URL is rawURL ("http://host:port" in
// plaintext, "https://host:port" with TLS; IPv6 literals in brackets),
// showing it creds. The connection keeps itself alive so that a dead peer
// is noticed within seconds.
func Dial(rawURL string, creds Credentials) (*grpc.ClientConn, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("%q is not a node URL like http://host:20202", rawURL)
	}
	transport := insecure.NewCredentials()
	if u.Scheme == "https" {
		transport = reloadingTLS{config: creds.TLS}
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(transport),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: KeepaliveTime, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.ForceCodecV2(codec)),
		grpc.WithInitialWindowSize(16 << 20),
		grpc.WithInitialConnWindowSize(64 << 20),
		experimental.WithBufferPool(bufPool),
	}
	if creds.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(creds.Token)))
	}
	return grpc.NewClient(u.Host, opts...)
}

// bearer sends a token with every call. Tokens go in plaintext over http://
// URLs too: a private network that wants them hidden uses https.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// reloadingTLS is TLS transport credentials whose configuration is asked
// for again at each handshake.
type reloadingTLS struct{ config func() *tls.Config }

func (r reloadingTLS) current() credentials.TransportCredentials {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if r.config != nil {
		cfg = r.config()
	}
	return credentials.NewTLS(cfg)
}

func (r reloadingTLS) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return r.current().ClientHandshake(ctx, authority, conn)
}

func (r reloadingTLS) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, fmt.Errorf("wire: client-only TLS credentials")
}

func (r reloadingTLS) Info() credentials.ProtocolInfo { return r.current().Info() }

func (r reloadingTLS) Clone() credentials.TransportCredentials { return r }

// OverrideServerName is part of the interface; gRPC no longer calls it.
func (r reloadingTLS) OverrideServerName(string) error { return nil }

// DialSocket connects to a node's storage socket at path, for a mount in
// another process. Each unary call gets timeout as its deadline unless it
// has an earlier one, so that a server that hangs fails the call rather
// than the app; no call waits for the server to be ready. Without a
// network between them, the socket closes as soon as either end dies, so
// no keepalive is needed (and the storage server allows none).
func DialSocket(path string, timeout time.Duration) (*grpc.ClientConn, error) {
	if timeout <= 0 {
		return nil, fmt.Errorf("the storage call timeout is %s: use a positive duration", timeout)
	}
	deadline := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	return grpc.NewClient("unix://"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.ForceCodecV2(codec)),
		grpc.WithInitialWindowSize(16<<20),
		grpc.WithInitialConnWindowSize(64<<20),
		experimental.WithBufferPool(bufPool),
		grpc.WithUnaryInterceptor(deadline),
		// Reconnect soon after a restarted server is back: gRPC's
		// default backoff grows to two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second}}),
	)
}
