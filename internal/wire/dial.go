package wire

import (
	"fmt"
	"net/url"
	"time"

	"google.golang.org/grpc"
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

// Dial connects to the node whose URL is rawURL ("http://host:port"; IPv6
// literals in brackets). The connection keeps itself alive so that a dead
// peer is noticed within seconds.
func Dial(rawURL string) (*grpc.ClientConn, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("%q is not a node URL like http://host:20202", rawURL)
	}
	return grpc.NewClient(u.Host,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: KeepaliveTime, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.ForceCodecV2(codec)),
		grpc.WithInitialWindowSize(16<<20),
		grpc.WithInitialConnWindowSize(64<<20),
		experimental.WithBufferPool(bufPool),
	)
}
