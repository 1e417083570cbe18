package proxy

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/logkey"
)

// Names the proxy shares with clients and with other nodes' proxies.
const (
	// TXIDCookie is the cookie that carries the TXID of the client's last
	// write: 16 lowercase hex digits, as LiteFS.
	TXIDCookie = "__txid"
	// ForwardedByHeader marks a request that a replica's proxy forwarded to
	// the primary's proxy; its value names the replica. A proxy that is not
	// the primary answers such a request with 503 instead of forwarding it
	// again.
	ForwardedByHeader = "Pagewire-Forwarded-By"
	// HealthPath is the route the proxy answers itself, for load balancers:
	// 200 on the primary and on a replica within max-lag, 503 otherwise.
	HealthPath = "/litefs/health"
)

const (
	// primaryPollInterval is how often a write asks the node for a primary
	// while none is known.
	primaryPollInterval = 50 * time.Millisecond
	// maxIdleConnsPerHost bounds the kept-alive connections to the app and
	// to the primary's proxy.
	maxIdleConnsPerHost = 64
	// idleConnTimeout is how long an unused kept-alive connection to the
	// app stays open; to the primary's proxy, at most that (see
	// Config.forwardIdleTimeout).
	idleConnTimeout = 60 * time.Second
	dialTimeout     = 5 * time.Second
	// shutdownTimeout bounds how long Run waits for requests to finish.
	shutdownTimeout = 5 * time.Second
)

// Node is what the proxy needs from the node it runs on. Its methods are
// called concurrently, on every request.
type Node interface {
	// IsPrimary reports whether this node holds the write lease now.
	IsPrimary() bool
	// Primary returns the current primary's hostname and the base URL of
	// its proxy ("http://host:port"). It returns an error when no primary
	// is known (yet).
	Primary(ctx context.Context) (hostname, proxyURL string, err error)
	// TXID returns this node's TXID of database db (0 if the node does not
	// have it).
	TXID(db string) pagewire.TXID
	// WaitTXID waits until this node has database db at txid or past it; it
	// returns ctx's error if ctx ends first.
	WaitTXID(ctx context.Context, db string, txid pagewire.TXID) error
	// Lag is how far this replica is behind the primary, in time (0 on the
	// primary or when caught up).
	Lag() time.Duration
}

// PeerNode is a Node that knows the addresses of the other nodes of its
// cluster. A request forwarded by another node's proxy (it carries
// ForwardedByHeader) from such an address keeps its X-Forwarded-* headers,
// which that proxy set: the primary's app sees the client a replica saw.
// Without it, only Config.TrustedProxies are trusted.
type PeerNode interface {
	Node
	// IsPeer reports whether addr is the address of another node of the
	// cluster now (on the primary: of a replica that follows it). It is
	// called concurrently, on forwarded requests.
	IsPeer(addr netip.Addr) bool
}

// Proxy is the HTTP proxy in front of the app. Build it with New; serve it
// with Run, or mount it as an http.Handler.
type Proxy struct {
	cfg           Config
	log           *slog.Logger
	errorLog      *log.Logger // for net/http's own messages
	node          Node
	peers         PeerNode // node, if it is one; else nil
	hop           string   // this node, in ForwardedByHeader
	passthrough   patterns
	alwaysForward patterns

	appTransport     *http.Transport
	primaryTransport *http.Transport
	app              *httputil.ReverseProxy // to the app, as is
	appWrite         *httputil.ReverseProxy // to the app, adding __txid to the response
	route            atomic.Pointer[primaryRoute]

	mu   sync.Mutex // guards addr
	addr net.Addr
}

var _ http.Handler = (*Proxy)(nil)

// primaryRoute is the reverse proxy to one primary's proxy; it is rebuilt
// when the primary changes.
type primaryRoute struct {
	hostname, url string
	rp            *httputil.ReverseProxy
}

// New validates cfg and returns a Proxy. It starts nothing.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	hop := cfg.Hostname
	if hop == "" {
		if h, err := os.Hostname(); err == nil && h != "" {
			hop = h
		} else {
			hop = "unknown"
		}
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	lg = lg.With(logkey.Component, "proxy")
	p := &Proxy{
		cfg:              cfg,
		log:              lg,
		errorLog:         slog.NewLogLogger(lg.Handler(), slog.LevelWarn),
		node:             cfg.Node,
		hop:              hop,
		passthrough:      compilePatterns(cfg.Passthrough),
		alwaysForward:    compilePatterns(cfg.AlwaysForward),
		appTransport:     newTransport(idleConnTimeout),
		primaryTransport: newTransport(cfg.forwardIdleTimeout()),
	}
	p.peers, _ = cfg.Node.(PeerNode)
	appURL := &url.URL{Scheme: "http", Host: cfg.Target}
	p.app = p.newReverseProxy(appURL, p.appTransport, p.appError)
	p.appWrite = p.newReverseProxy(appURL, p.appTransport, p.appError)
	p.appWrite.ModifyResponse = p.setTXIDCookie
	return p, nil
}

// newTransport returns a transport with room for many kept-alive
// connections to one host, the app or the primary's proxy, each kept for
// idle while unused.
func newTransport(idle time.Duration) *http.Transport {
	return &http.Transport{
		// No Proxy func: the app is local and the primary is on the
		// cluster's network; an HTTP_PROXY meant for the internet must not
		// catch them.
		DialContext:           (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          4 * maxIdleConnsPerHost,
		MaxIdleConnsPerHost:   maxIdleConnsPerHost,
		IdleConnTimeout:       idle,
		ExpectContinueTimeout: time.Second,
	}
}

func (p *Proxy) newReverseProxy(target *url.URL, t http.RoundTripper, onError func(http.ResponseWriter, *http.Request, error)) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:      func(pr *httputil.ProxyRequest) { p.rewrite(pr, target) },
		Transport:    t,
		ErrorLog:     p.errorLog,
		ErrorHandler: onError,
	}
}

// forwardedHeaders are the X-Forwarded-* headers that a trusted earlier
// proxy sets and rewrite keeps.
var forwardedHeaders = []string{"X-Forwarded-Host", "X-Forwarded-Proto"}

// rewrite points the outgoing request at target and says who the client
// is: what a trusted earlier hop said (Fly's edge, a load balancer in
// proxy.trusted-proxies, a replica's proxy), or what this proxy sees.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest, target *url.URL) {
	pr.SetURL(target)
	// Keep the Host the client asked for, as NewSingleHostReverseProxy
	// does: apps build their links from it.
	pr.Out.Host = pr.In.Host

	// ReverseProxy drops Forwarded and X-Forwarded-* before Rewrite. From
	// an untrusted client they stay dropped, and so does a forged
	// ForwardedByHeader: SetXForwarded says what this proxy sees.
	trusted := p.trustedHop(pr.In)
	if !trusted {
		pr.Out.Header.Del(ForwardedByHeader)
		pr.SetXForwarded()
		return
	}

	// From a trusted hop they are kept, as a Director-based ReverseProxy
	// keeps them, and this hop is added.
	if xff := pr.In.Header["X-Forwarded-For"]; len(xff) > 0 {
		pr.Out.Header["X-Forwarded-For"] = slices.Clone(xff)
	}
	pr.SetXForwarded()
	for _, h := range forwardedHeaders {
		if v := pr.In.Header.Get(h); v != "" {
			pr.Out.Header.Set(h, v)
		}
	}
}

// trustedHop reports whether r comes from a hop whose X-Forwarded-*
// headers the proxy keeps: an address in TrustedProxies, or another node
// of the cluster forwarding a write (see PeerNode).
func (p *Proxy) trustedHop(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false // not a TCP peer (a test's, or a unix socket's): trust nothing
	}
	addr := ap.Addr().Unmap().WithZone("")
	for _, pfx := range p.cfg.TrustedProxies {
		if pfx.Contains(addr) {
			return true
		}
	}
	return p.peers != nil && r.Header.Get(ForwardedByHeader) != "" && p.peers.IsPeer(addr)
}

// ServeHTTP routes one request as DESIGN §6 says: to the local app, to the
// primary's proxy, or answered by the proxy itself.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	read := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch {
	case read && r.URL.Path == HealthPath:
		p.serveHealth(w)
	case p.passthrough.match(r.URL.Path):
		p.app.ServeHTTP(w, r)
	case p.node.IsPrimary():
		p.serveOnPrimary(w, r, read)
	case r.Header.Get(ForwardedByHeader) != "":
		p.refuseForwarded(w, r)
	case !read || p.alwaysForward.match(r.URL.Path):
		p.forward(w, r)
	default:
		p.serveRead(w, r)
	}
}

// serveOnPrimary sends r to the app; the response to a write carries the
// TXID it made.
func (p *Proxy) serveOnPrimary(w http.ResponseWriter, r *http.Request, read bool) {
	if read {
		p.app.ServeHTTP(w, r)
		return
	}
	p.appWrite.ServeHTTP(w, r)
}

// setTXIDCookie adds __txid to the app's response to a write on the
// primary: the write has committed, so the database's TXID covers it.
func (p *Proxy) setTXIDCookie(resp *http.Response) error {
	c := http.Cookie{
		Name:     TXIDCookie,
		Value:    p.node.TXID(p.cfg.DB).String(),
		Path:     "/",
		HttpOnly: true,
	}
	resp.Header.Add("Set-Cookie", c.String())
	return nil
}

// serveRead serves a GET or HEAD on a replica from the local app, once the
// replica has the write the request's __txid names.
func (p *Proxy) serveRead(w http.ResponseWriter, r *http.Request) {
	if want, ok := p.cookieTXID(r); ok && !p.awaitTXID(w, r, want) {
		return
	}
	p.app.ServeHTTP(w, r)
}

// cookieTXID returns the TXID r's __txid cookie holds, if it holds one.
func (p *Proxy) cookieTXID(r *http.Request) (pagewire.TXID, bool) {
	c, err := r.Cookie(TXIDCookie)
	if err != nil {
		return 0, false
	}
	txid, err := parseTXID(c.Value)
	if err != nil {
		p.log.Debug("ignoring a malformed __txid cookie", logKeyCookie, c.Value, logkey.Error, err)
		return 0, false
	}
	return txid, true
}

// parseTXID parses a __txid cookie value: 16 hex digits.
func parseTXID(s string) (pagewire.TXID, error) {
	if len(s) != 16 {
		return 0, fmt.Errorf("%q is not 16 hex digits", s)
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not 16 hex digits", s)
	}
	return pagewire.TXID(v), nil
}

// awaitTXID waits, for at most max-lag, until this replica has database
// cfg.DB at want. When it has not, it answers r and returns false.
func (p *Proxy) awaitTXID(w http.ResponseWriter, r *http.Request, want pagewire.TXID) bool {
	if p.node.TXID(p.cfg.DB) >= want {
		return true
	}
	ctx, cancel := context.WithTimeout(r.Context(), p.cfg.MaxLag)
	err := p.node.WaitTXID(ctx, p.cfg.DB, want)
	cancel()
	if err == nil {
		return true
	}
	if r.Context().Err() != nil {
		// The client went away (or Run is stopping): nobody reads an answer.
		p.log.Debug("client left while waiting for a TXID", logkey.DB, p.cfg.DB, logkey.TXID, want)
		return false
	}
	local := p.node.TXID(p.cfg.DB)
	if local >= want {
		return true
	}
	p.log.Warn("replica has not caught up with a read's __txid within max-lag",
		logkey.DB, p.cfg.DB, logkey.TXID, want, logKeyLocalTXID, local, logkey.Error, err)
	if !errors.Is(err, context.DeadlineExceeded) {
		http.Error(w, fmt.Sprintf("pagewire proxy: waiting for this replica to reach TXID %s of database %q failed (it is at TXID %s): %v; retry",
			want, p.cfg.DB, local, err), http.StatusServiceUnavailable)
		return false
	}
	http.Error(w, fmt.Sprintf("pagewire proxy: this replica has not caught up to TXID %s of database %q within max-lag %s (local TXID %s); retry, or raise proxy.max-lag",
		want, p.cfg.DB, p.cfg.MaxLag, local), http.StatusGatewayTimeout)
	return false
}

// refuseForwarded answers a request another proxy forwarded here as the
// primary's, while this node is not the primary: forwarding it on could loop.
func (p *Proxy) refuseForwarded(w http.ResponseWriter, r *http.Request) {
	by := r.Header.Get(ForwardedByHeader)
	p.log.Warn("refused a forwarded request: this node is not the primary",
		logKeyMethod, r.Method, logkey.Path, r.URL.Path, logKeyFwdBy, by)
	w.Header().Set("Retry-After", "1")
	http.Error(w, fmt.Sprintf("pagewire proxy: %q forwarded this request to %q as the primary, but %q is no longer the primary; retry",
		by, p.hop, p.hop), http.StatusServiceUnavailable)
}

// forward sends a write (or an always-forward path) from a replica to the
// primary: through the primary's proxy, or with fly-replay on Fly.io.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request) {
	hostname, proxyURL, self, err := p.awaitPrimary(r.Context())
	switch {
	case err != nil:
		if r.Context().Err() != nil {
			return // the client went away
		}
		p.log.Warn("no primary to send a request to", logKeyMethod, r.Method, logkey.Path, r.URL.Path, logkey.Error, err)
		w.Header().Set("Retry-After", "1")
		http.Error(w, fmt.Sprintf("pagewire proxy: this node is a replica and no primary is known after waiting %s (%v): the cluster may be electing one; retry shortly, or raise proxy.primary-redirect-timeout",
			p.cfg.PrimaryRedirectTimeout, err), http.StatusServiceUnavailable)
		return
	case self:
		// This node took the lease while the request waited.
		p.serveOnPrimary(w, r, r.Method == http.MethodGet || r.Method == http.MethodHead)
		return
	}
	if p.cfg.FlyAppName != "" {
		w.Header().Set("fly-replay", "instance="+hostname)
		w.WriteHeader(http.StatusOK)
		return
	}
	route, err := p.routeTo(hostname, proxyURL)
	if err != nil {
		p.log.Error("cannot forward to the primary", logkey.Primary, hostname, logkey.Error, err)
		http.Error(w, "pagewire proxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	if p.log.Enabled(r.Context(), slog.LevelDebug) {
		p.log.Debug("forwarding to the primary", logKeyMethod, r.Method, logkey.Path, r.URL.Path, logkey.Primary, hostname, logKeyTarget, proxyURL)
	}
	route.rp.ServeHTTP(w, r)
}

// awaitPrimary returns the primary, polling the node for at most
// primary-redirect-timeout while none is known. self is true when this node
// became the primary meanwhile.
func (p *Proxy) awaitPrimary(ctx context.Context) (hostname, proxyURL string, self bool, err error) {
	hostname, proxyURL, err = p.node.Primary(ctx)
	if err == nil {
		return hostname, proxyURL, false, nil
	}
	lastErr := err
	ctx, cancel := context.WithTimeout(ctx, p.cfg.PrimaryRedirectTimeout)
	defer cancel()
	t := time.NewTimer(primaryPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return "", "", false, lastErr
		case <-t.C:
		}
		if p.node.IsPrimary() {
			return "", "", true, nil
		}
		hostname, proxyURL, err = p.node.Primary(ctx)
		if err == nil {
			return hostname, proxyURL, false, nil
		}
		if ctx.Err() == nil {
			lastErr = err
		}
		t.Reset(primaryPollInterval)
	}
}

// routeTo returns the reverse proxy to the primary's proxy at rawURL.
func (p *Proxy) routeTo(hostname, rawURL string) (*primaryRoute, error) {
	if r := p.route.Load(); r != nil && r.hostname == hostname && r.url == rawURL {
		return r, nil
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("the primary %q published proxy URL %q, which is not an http://host:port URL: check proxy.addr and lease.advertise-url on the primary", hostname, rawURL)
	}
	r := &primaryRoute{hostname: hostname, url: rawURL}
	r.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			p.rewrite(pr, u)
			pr.Out.Header.Set(ForwardedByHeader, p.hop)
		},
		Transport: p.primaryTransport,
		ErrorLog:  p.errorLog,
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			p.upstreamError(w, req, err, fmt.Sprintf("the primary's proxy at %s (primary %q) is not reachable", rawURL, hostname),
				"retry; if it lasts, check that the primary runs its proxy there")
		},
	}
	p.route.Store(r)
	return r, nil
}

// appError answers a request the app did not answer.
func (p *Proxy) appError(w http.ResponseWriter, r *http.Request, err error) {
	p.upstreamError(w, r, err, fmt.Sprintf("the app at %s (proxy.target) is not answering", p.cfg.Target),
		"check that it is running and listening there")
}

// upstreamError answers 502 for a request that the app or the primary's
// proxy did not answer.
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error, what, todo string) {
	if r.Context().Err() != nil {
		// The client went away: the round trip was cancelled, nobody reads
		// an answer.
		p.log.Debug("client left before the answer", logKeyMethod, r.Method, logkey.Path, r.URL.Path, logkey.Error, err)
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	p.log.Warn(what, logKeyMethod, r.Method, logkey.Path, r.URL.Path, logkey.Error, err)
	http.Error(w, fmt.Sprintf("pagewire proxy: %s: %v; %s", what, err, todo), http.StatusBadGateway)
}

// serveHealth answers HealthPath.
func (p *Proxy) serveHealth(w http.ResponseWriter) {
	if !p.node.IsPrimary() {
		if lag := p.node.Lag(); lag > p.cfg.MaxLag {
			http.Error(w, fmt.Sprintf("pagewire proxy: this replica is %s behind the primary, more than max-lag %s",
				lag.Round(time.Millisecond), p.cfg.MaxLag), http.StatusServiceUnavailable)
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("OK\n"))
}
