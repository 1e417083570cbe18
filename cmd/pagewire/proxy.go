package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pagewire/pagewire"
	client "github.com/pagewire/pagewire/clients/go"
	"github.com/pagewire/pagewire/config"
	"github.com/pagewire/pagewire/engine"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
	"github.com/pagewire/pagewire/proxy"
)

// proxyNode is the node as its proxy sees it.
type proxyNode struct {
	store   *engine.Store
	current *atomic.Pointer[follower] // the replica's newest follower
	dial    dialFunc
	// replicas is the server's IsReplica; set by newServer, before the
	// proxy runs.
	replicas func(netip.Addr) bool

	mu     sync.Mutex
	routes map[string]string // a primary's advertise URL → its proxy URL
}

var _ proxy.PeerNode = (*proxyNode)(nil)

func (n *proxyNode) IsPrimary() bool {
	role, _ := n.store.Role()
	return role == pagewire.RolePrimary
}

// Primary asks the primary for its proxy's URL (GetNode) once per primary.
func (n *proxyNode) Primary(ctx context.Context) (string, string, error) {
	_, ro := n.store.Role()
	if ro.AdvertiseURL == "" {
		return "", "", fmt.Errorf("no primary is known yet")
	}
	n.mu.Lock()
	proxyURL, ok := n.routes[ro.AdvertiseURL]
	n.mu.Unlock()
	if ok {
		return ro.Primary, proxyURL, nil
	}
	conn, err := n.dial(ro.AdvertiseURL)
	if err != nil {
		return "", "", err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	node, err := adminv1.NewAdminServiceClient(conn).GetNode(ctx, &adminv1.GetNodeRequest{})
	if err != nil {
		return "", "", fmt.Errorf("ask the primary %s for its proxy: %w", ro.AdvertiseURL, client.Error(err))
	}
	if node.GetProxyUrl() == "" {
		return "", "", fmt.Errorf("the primary %s runs no proxy: set proxy.addr on every node", node.GetHostname())
	}
	n.mu.Lock()
	if n.routes == nil {
		n.routes = map[string]string{}
	}
	n.routes[ro.AdvertiseURL] = node.GetProxyUrl()
	n.mu.Unlock()
	return node.GetHostname(), node.GetProxyUrl(), nil
}

// TXID is the TXID readers on this node see (on a replica, the apply
// worker has published it).
func (n *proxyNode) TXID(db string) pagewire.TXID {
	pos, _ := n.store.Visible(db)
	return pos.TXID
}

func (n *proxyNode) WaitTXID(ctx context.Context, db string, txid pagewire.TXID) error {
	_, err := n.store.WaitForPosition(ctx, db, txid)
	return err
}

// IsPeer reports whether a replica follows this node from addr: its
// proxy's forwarded writes keep the client's X-Forwarded-* headers.
func (n *proxyNode) IsPeer(addr netip.Addr) bool {
	return n.replicas != nil && n.replicas(addr)
}

func (n *proxyNode) Lag() time.Duration {
	if n.IsPrimary() {
		return 0
	}
	f := n.current.Load()
	if f == nil {
		return 0
	}
	return f.Lag()
}

// proxyURL is the URL other nodes reach this node's proxy at: the host of
// its advertise URL and the port of proxy.addr ("" without a proxy).
func proxyURL(cfg config.Config, advertiseURL string) string {
	if cfg.Proxy.Addr == "" {
		return ""
	}
	_, port, err := net.SplitHostPort(cfg.Proxy.Addr)
	if err != nil {
		return ""
	}
	host := ""
	if u, err := url.Parse(advertiseURL); err == nil {
		host = u.Hostname()
	}
	if host == "" {
		host, _ = os.Hostname()
	}
	return "http://" + net.JoinHostPort(host, port)
}

// newProxy builds the node's proxy from the config's proxy section.
func newProxy(cfg config.Config, hostname string, node *proxyNode, log *slog.Logger) (*proxy.Proxy, error) {
	pcfg := proxy.DefaultConfig()
	pcfg.Addr, pcfg.Target, pcfg.DB = cfg.Proxy.Addr, cfg.Proxy.Target, cfg.Proxy.DB
	pcfg.Passthrough, pcfg.AlwaysForward = cfg.Proxy.Passthrough, cfg.Proxy.AlwaysForward
	pcfg.MaxLag, pcfg.PrimaryRedirectTimeout = time.Duration(cfg.Proxy.MaxLag), time.Duration(cfg.Proxy.PrimaryRedirectTimeout)
	pcfg.ReadTimeout, pcfg.ReadHeaderTimeout = time.Duration(cfg.Proxy.ReadTimeout), time.Duration(cfg.Proxy.ReadHeaderTimeout)
	pcfg.WriteTimeout, pcfg.IdleTimeout = time.Duration(cfg.Proxy.WriteTimeout), time.Duration(cfg.Proxy.IdleTimeout)
	pcfg.TrustedProxies = cfg.Proxy.TrustedPrefixes()
	pcfg.FlyAppName, pcfg.Hostname = os.Getenv("FLY_APP_NAME"), hostname
	pcfg.Node, pcfg.Logger = node, log
	return proxy.New(pcfg)
}
