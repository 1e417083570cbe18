package client

import (
	"google.golang.org/grpc"

	"github.com/pagewire/pagewire/internal/wire"
)

// Dial connects to the node whose URL is rawURL ("http://host:port"; IPv6
// literals in brackets). The connection keeps itself alive so that a dead
// peer is noticed within seconds.
func Dial(rawURL string) (*grpc.ClientConn, error) { return wire.Dial(rawURL) }
