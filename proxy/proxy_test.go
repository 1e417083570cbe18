package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/syncbuf"
	"github.com/pagewire/pagewire/proxy"
)

// fakeNode is a Node whose state the test sets.
type fakeNode struct {
	mu          sync.Mutex // guards the fields below
	primary     bool
	hostname    string // the primary's
	proxyURL    string // the primary's; "" means no primary is known
	txid        pagewire.TXID
	lag         time.Duration
	changed     chan struct{} // closed and replaced when txid changes
	waits       int           // WaitTXID calls so far
	primaryAsks int           // Primary calls so far
	peers       []netip.Addr  // what IsPeer reports true for
}

var _ proxy.PeerNode = (*fakeNode)(nil)

func newFakeNode() *fakeNode { return &fakeNode{changed: make(chan struct{})} }

func (n *fakeNode) IsPrimary() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.primary
}

func (n *fakeNode) Primary(ctx context.Context) (string, string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.primaryAsks++
	if n.proxyURL == "" {
		return "", "", errors.New("no primary known")
	}
	return n.hostname, n.proxyURL, nil
}

func (n *fakeNode) TXID(db string) pagewire.TXID {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.txid
}

func (n *fakeNode) WaitTXID(ctx context.Context, db string, txid pagewire.TXID) error {
	n.mu.Lock()
	n.waits++
	n.mu.Unlock()
	for {
		n.mu.Lock()
		if n.txid >= txid {
			n.mu.Unlock()
			return nil
		}
		ch := n.changed
		n.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

func (n *fakeNode) Lag() time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lag
}

func (n *fakeNode) IsPeer(addr netip.Addr) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Contains(n.peers, addr)
}

func (n *fakeNode) setTXID(txid pagewire.TXID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.txid = txid
	close(n.changed)
	n.changed = make(chan struct{})
}

func (n *fakeNode) setPrimary(hostname, proxyURL string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.hostname, n.proxyURL = hostname, proxyURL
}

func (n *fakeNode) counts() (waits, primaryAsks int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.waits, n.primaryAsks
}

// seen is what the test app reports about a request it got.
type seen struct {
	App         string
	Method      string
	Path        string
	Query       string
	Body        string
	Host        string
	Custom      string
	ForwardedBy string
	XFF         string
	XFHost      string
	XFProto     string
	Forwarded   string
}

// newApp starts a test app named name: it answers with what it saw as JSON
// (and a cookie of its own on writes), and /ws and /fwd/ws echo bytes after
// a WebSocket-style upgrade.
func newApp(t testing.TB, name string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", wsEcho)
	mux.HandleFunc("/fwd/ws", wsEcho)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.SetCookie(w, &http.Cookie{Name: "app", Value: name})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(seen{
			App: name, Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Body: string(body),
			Host: r.Host, Custom: r.Header.Get("X-Custom"), ForwardedBy: r.Header.Get(proxy.ForwardedByHeader),
			XFF: r.Header.Get("X-Forwarded-For"), XFHost: r.Header.Get("X-Forwarded-Host"),
			XFProto: r.Header.Get("X-Forwarded-Proto"), Forwarded: r.Header.Get("Forwarded"),
		})
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

// wsEcho accepts an upgrade by hand and echoes every byte back.
func wsEcho(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		http.Error(w, "want an Upgrade: websocket request", http.StatusBadRequest)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	if brw.Flush() != nil {
		return
	}
	buf := make([]byte, 512)
	for {
		n, err := brw.Read(buf)
		if n > 0 {
			if _, werr := conn.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// testConfig returns DefaultConfig for a proxy in front of the app at
// target on node.
func testConfig(target string, node proxy.Node) proxy.Config {
	c := proxy.DefaultConfig()
	c.Target, c.Node = target, node
	return c
}

// newProxy builds a Proxy from cfg and serves it on a test server.
func newProxy(t testing.TB, cfg proxy.Config) (*proxy.Proxy, *httptest.Server) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DB == "" {
		cfg.DB = "app.db"
	}
	p, err := proxy.New(cfg)
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	s := httptest.NewServer(p)
	t.Cleanup(s.Close)
	return p, s
}

// cluster is a primary and a replica, each an app behind a proxy.
type cluster struct {
	primaryApp, replicaApp   *httptest.Server
	primaryNode, replicaNode *fakeNode
	primary, replica         *httptest.Server // the proxies
}

// newCluster starts a cluster; cfg, if not nil, adjusts the replica
// proxy's config.
func newCluster(t testing.TB, cfg func(*proxy.Config)) *cluster {
	t.Helper()
	c := &cluster{
		primaryApp:  newApp(t, "primary-app"),
		replicaApp:  newApp(t, "replica-app"),
		primaryNode: newFakeNode(),
		replicaNode: newFakeNode(),
	}
	c.primaryNode.primary = true
	// The replica's proxy forwards from the loopback address.
	c.primaryNode.peers = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	pcfg := testConfig(c.primaryApp.Listener.Addr().String(), c.primaryNode)
	pcfg.AlwaysForward = []string{"/admin/*", "/fwd/*"}
	_, c.primary = newProxy(t, pcfg)
	c.primaryNode.setPrimary("primary-host", c.primary.URL)
	c.replicaNode.setPrimary("primary-host", c.primary.URL)
	rcfg := testConfig(c.replicaApp.Listener.Addr().String(), c.replicaNode)
	rcfg.AlwaysForward = []string{"/admin/*", "/fwd/*"}
	if cfg != nil {
		cfg(&rcfg)
	}
	_, c.replica = newProxy(t, rcfg)
	return c
}

type response struct {
	status int
	header http.Header
	body   string
	seen   seen // the app's report, if the app answered
}

// do sends a request through the proxy at base, with an optional __txid.
func do(t testing.TB, method, url, body string, txid string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Custom", "custom-value")
	if txid != "" {
		req.AddCookie(&http.Cookie{Name: proxy.TXIDCookie, Value: txid})
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if len(b) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &r.seen); err != nil {
			t.Fatalf("%s %s: app answer %q: %v", method, url, b, err)
		}
	}
	return r
}

// txidCookie returns the __txid Set-Cookie of h, or nil.
func txidCookie(t testing.TB, h http.Header) *http.Cookie {
	t.Helper()
	var found *http.Cookie
	for _, line := range h.Values("Set-Cookie") {
		c, err := http.ParseSetCookie(line)
		if err != nil {
			t.Fatalf("Set-Cookie %q: %v", line, err)
		}
		if c.Name == proxy.TXIDCookie {
			if found != nil {
				t.Fatalf("two __txid cookies: %q", h.Values("Set-Cookie"))
			}
			found = c
		}
	}
	return found
}

func checkTXIDCookie(t testing.TB, h http.Header, want pagewire.TXID) {
	t.Helper()
	c := txidCookie(t, h)
	if c == nil {
		t.Fatalf("no __txid cookie in %q", h.Values("Set-Cookie"))
	}
	if got, want := c.Value, fmt.Sprintf("%016x", uint64(want)); got != want {
		t.Errorf("__txid=%q, want %q", got, want)
	}
	if c.Path != "/" || !c.HttpOnly {
		t.Errorf("__txid cookie %q: want Path=/ and HttpOnly", c.Raw)
	}
}

func TestProxy_Primary(t *testing.T) {
	t.Parallel()
	app := newApp(t, "app")
	node := newFakeNode()
	node.primary = true
	node.setTXID(0x2a)
	_, s := newProxy(t, testConfig(app.Listener.Addr().String(), node))

	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		t.Run(method, func(t *testing.T) {
			r := do(t, method, s.URL+"/items/1?x=y", "payload", "")
			if r.status != http.StatusOK || r.seen.App != "app" || r.seen.Method != method || r.seen.Path != "/items/1" ||
				r.seen.Query != "x=y" || r.seen.Body != "payload" || r.seen.Custom != "custom-value" {
				t.Fatalf("got %d %+v", r.status, r.seen)
			}
			checkTXIDCookie(t, r.header, 0x2a)
			if !strings.Contains(strings.Join(r.header.Values("Set-Cookie"), "\n"), "app=app") {
				t.Errorf("the app's own cookie is gone: %q", r.header.Values("Set-Cookie"))
			}
		})
	}
	t.Run("GET", func(t *testing.T) {
		// A primary has nothing to wait for, however far ahead the cookie is.
		r := do(t, http.MethodGet, s.URL+"/items", "", "00000000000000ff")
		if r.status != http.StatusOK || r.seen.App != "app" {
			t.Fatalf("got %d %+v", r.status, r.seen)
		}
		if c := txidCookie(t, r.header); c != nil {
			t.Errorf("GET got a __txid cookie: %s", c.Raw)
		}
		if waits, _ := node.counts(); waits != 0 {
			t.Errorf("the primary waited for a TXID %d times", waits)
		}
	})
	t.Run("forwarded write", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/items", strings.NewReader("x"))
		req.Header.Set(proxy.ForwardedByHeader, "some-replica")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		checkTXIDCookie(t, resp.Header, 0x2a)
	})
}

func TestProxy_ReplicaGETIsLocal(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		r := do(t, method, c.replica.URL+"/items?all=1", "", "")
		if r.status != http.StatusOK {
			t.Fatalf("%s: status %d", method, r.status)
		}
		if method == http.MethodGet && (r.seen.App != "replica-app" || r.seen.Query != "all=1") {
			t.Fatalf("GET reached %+v, want the replica's app", r.seen)
		}
		if c := txidCookie(t, r.header); c != nil {
			t.Errorf("%s on a replica got a __txid cookie", method)
		}
	}
	if _, asks := c.replicaNode.counts(); asks != 0 {
		t.Errorf("a read asked for the primary %d times", asks)
	}
}

func TestProxy_ReplicaForwardsWrites(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.primaryNode.setTXID(7)
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, "PROPFIND"} {
		t.Run(method, func(t *testing.T) {
			r := do(t, method, c.replica.URL+"/items/3?q=1", `{"name":"a"}`, "")
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			s := r.seen
			if s.App != "primary-app" || s.Method != method || s.Path != "/items/3" || s.Query != "q=1" ||
				s.Body != `{"name":"a"}` || s.Custom != "custom-value" {
				t.Fatalf("the primary's app saw %+v", s)
			}
			if s.ForwardedBy == "" {
				t.Error("no Pagewire-Forwarded-By on the forwarded request")
			}
			if got, want := s.Host, c.replica.Listener.Addr().String(); got != want || s.XFHost != want {
				t.Errorf("the app saw Host %q, X-Forwarded-Host %q; want the client's %q", got, s.XFHost, want)
			}
			// Client, then the replica's proxy.
			if got, want := s.XFF, "127.0.0.1, 127.0.0.1"; got != want {
				t.Errorf("X-Forwarded-For=%q, want %q", got, want)
			}
			checkTXIDCookie(t, r.header, 7)
		})
	}

	t.Run("always-forward GET", func(t *testing.T) {
		r := do(t, http.MethodGet, c.replica.URL+"/admin/stats", "", "")
		if r.status != http.StatusOK || r.seen.App != "primary-app" || r.seen.Method != http.MethodGet {
			t.Fatalf("got %d %+v", r.status, r.seen)
		}
		if c := txidCookie(t, r.header); c != nil {
			t.Errorf("a forwarded GET got a __txid cookie: %s", c.Raw)
		}
	})

	t.Run("read after write", func(t *testing.T) {
		// The replica has the write already: the read goes straight to its app.
		c.replicaNode.setTXID(7)
		r := do(t, http.MethodGet, c.replica.URL+"/items", "", "0000000000000007")
		if r.status != http.StatusOK || r.seen.App != "replica-app" {
			t.Fatalf("got %d %+v", r.status, r.seen)
		}
	})
}

func TestProxy_ReadYourWrites(t *testing.T) {
	t.Parallel()
	t.Run("waits", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t, func(cfg *proxy.Config) { cfg.MaxLag = time.Minute })
		c.replicaNode.setTXID(3)
		done := make(chan response, 1)
		go func() { done <- do(t, http.MethodGet, c.replica.URL+"/items", "", "0000000000000005") }()
		waitFor(t, func() bool { w, _ := c.replicaNode.counts(); return w > 0 })
		select {
		case r := <-done:
			t.Fatalf("the read did not wait for TXID 5: %d %s", r.status, r.body)
		default:
		}
		c.replicaNode.setTXID(4)
		c.replicaNode.setTXID(5)
		r := <-done
		if r.status != http.StatusOK || r.seen.App != "replica-app" {
			t.Fatalf("got %d %+v %s", r.status, r.seen, r.body)
		}
	})
	t.Run("times out", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t, func(cfg *proxy.Config) { cfg.MaxLag = 50 * time.Millisecond })
		c.replicaNode.setTXID(3)
		r := do(t, http.MethodGet, c.replica.URL+"/items", "", "0000000000000009")
		if r.status != http.StatusGatewayTimeout {
			t.Fatalf("status %d, want 504: %s", r.status, r.body)
		}
		for _, want := range []string{"has not caught up to TXID 0000000000000009", "max-lag 50ms", "local TXID 0000000000000003", `"app.db"`} {
			if !strings.Contains(r.body, want) {
				t.Errorf("body %q does not say %q", r.body, want)
			}
		}
	})
	t.Run("malformed cookie", func(t *testing.T) {
		t.Parallel()
		var logs syncbuf.Buffer
		app := newApp(t, "replica-app")
		node := newFakeNode()
		cfg := testConfig(app.Listener.Addr().String(), node)
		cfg.MaxLag = time.Hour
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		_, s := newProxy(t, cfg)
		for _, v := range []string{"zz", "5", "00000000000000009", "000000000000000x", "-000000000000001"} {
			r := do(t, http.MethodGet, s.URL+"/items", "", v)
			if r.status != http.StatusOK || r.seen.App != "replica-app" {
				t.Fatalf("cookie %q: got %d %s", v, r.status, r.body)
			}
		}
		if waits, _ := node.counts(); waits != 0 {
			t.Errorf("malformed cookies made the proxy wait %d times", waits)
		}
		if !strings.Contains(logs.String(), "malformed __txid") {
			t.Errorf("no debug log about the malformed cookie: %s", logs.String())
		}
	})
}

func TestProxy_PassthroughAndAlwaysForward(t *testing.T) {
	t.Parallel()
	c := newCluster(t, func(cfg *proxy.Config) {
		cfg.Passthrough = []string{"/static/*", "*.png", "/admin/public/*"}
		cfg.AlwaysForward = []string{"/admin/*", "/login"}
		cfg.MaxLag = time.Hour // a wait would hang the test
	})
	c.replicaNode.setTXID(1)
	tests := []struct {
		method, path string
		wantApp      string
		passthrough  bool
	}{
		{http.MethodGet, "/static/site.css", "replica-app", true},
		{http.MethodPost, "/static/upload", "replica-app", true}, // passthrough: not forwarded
		{http.MethodDelete, "/img/a/b.png", "replica-app", true},
		{http.MethodGet, "/admin/users", "primary-app", false},
		{http.MethodGet, "/admin/public/logo", "replica-app", true}, // passthrough wins
		{http.MethodGet, "/login", "primary-app", false},
		{http.MethodGet, "/login/x", "replica-app", false}, // anchored
		{http.MethodGet, "/items", "replica-app", false},
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.path, func(t *testing.T) {
			txid := ""
			if tt.passthrough {
				txid = "00000000000000ff" // passthrough skips the wait
			}
			r := do(t, tt.method, c.replica.URL+tt.path, "", txid)
			if r.status != http.StatusOK || r.seen.App != tt.wantApp {
				t.Fatalf("got %d %+v %s, want %s", r.status, r.seen, r.body, tt.wantApp)
			}
			if tt.passthrough && txidCookie(t, r.header) != nil {
				t.Error("a passthrough request got a __txid cookie")
			}
		})
	}
	if waits, _ := c.replicaNode.counts(); waits != 0 {
		t.Errorf("passthrough requests waited %d times", waits)
	}
}

func TestProxy_FlyReplay(t *testing.T) {
	t.Parallel()
	c := newCluster(t, func(cfg *proxy.Config) { cfg.FlyAppName = "myapp" })
	for _, tt := range []struct{ method, path string }{{http.MethodPost, "/items"}, {http.MethodGet, "/admin/x"}} {
		r := do(t, tt.method, c.replica.URL+tt.path, "body", "")
		if r.status != http.StatusOK || r.body != "" {
			t.Fatalf("%s %s: got %d %q, want 200 and no body", tt.method, tt.path, r.status, r.body)
		}
		if got, want := r.header.Get("fly-replay"), "instance=primary-host"; got != want {
			t.Errorf("fly-replay=%q, want %q", got, want)
		}
	}
	// Reads stay local.
	if r := do(t, http.MethodGet, c.replica.URL+"/items", "", ""); r.seen.App != "replica-app" || r.header.Get("fly-replay") != "" {
		t.Errorf("GET: %+v, fly-replay %q", r.seen, r.header.Get("fly-replay"))
	}
}

func TestProxy_NoPrimary(t *testing.T) {
	t.Parallel()
	t.Run("times out", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t, func(cfg *proxy.Config) { cfg.PrimaryRedirectTimeout = 120 * time.Millisecond })
		c.replicaNode.setPrimary("", "")
		r := do(t, http.MethodPost, c.replica.URL+"/items", "x", "")
		if r.status != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503: %s", r.status, r.body)
		}
		for _, want := range []string{"no primary is known", "120ms", "no primary known"} {
			if !strings.Contains(r.body, want) {
				t.Errorf("body %q does not say %q", r.body, want)
			}
		}
		if _, asks := c.replicaNode.counts(); asks < 2 {
			t.Errorf("asked for the primary %d times, want it polled", asks)
		}
	})
	t.Run("appears", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t, func(cfg *proxy.Config) { cfg.PrimaryRedirectTimeout = time.Minute })
		c.replicaNode.setPrimary("", "")
		done := make(chan response, 1)
		go func() { done <- do(t, http.MethodPost, c.replica.URL+"/items", "x", "") }()
		waitFor(t, func() bool { _, asks := c.replicaNode.counts(); return asks >= 2 })
		c.replicaNode.setPrimary("primary-host", c.primary.URL)
		if r := <-done; r.status != http.StatusOK || r.seen.App != "primary-app" {
			t.Fatalf("got %d %+v %s", r.status, r.seen, r.body)
		}
	})
	t.Run("becomes primary", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t, func(cfg *proxy.Config) { cfg.PrimaryRedirectTimeout = time.Minute })
		c.replicaNode.setPrimary("", "")
		c.replicaNode.setTXID(11)
		done := make(chan response, 1)
		go func() { done <- do(t, http.MethodPost, c.replica.URL+"/items", "x", "") }()
		waitFor(t, func() bool { _, asks := c.replicaNode.counts(); return asks >= 2 })
		c.replicaNode.mu.Lock()
		c.replicaNode.primary = true
		c.replicaNode.mu.Unlock()
		r := <-done
		if r.status != http.StatusOK || r.seen.App != "replica-app" {
			t.Fatalf("got %d %+v %s", r.status, r.seen, r.body)
		}
		checkTXIDCookie(t, r.header, 11)
	})
}

func TestProxy_LoopGuard(t *testing.T) {
	t.Parallel()
	t.Run("header", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t, nil)
		req, _ := http.NewRequest(http.MethodPost, c.replica.URL+"/items", strings.NewReader("x"))
		req.Header.Set(proxy.ForwardedByHeader, "other-replica")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "no longer the primary") ||
			!strings.Contains(string(b), "retry") {
			t.Fatalf("got %d %q, want 503 saying the node is no longer the primary", resp.StatusCode, b)
		}
	})
	t.Run("stale primary is this node", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t, nil)
		c.replicaNode.setPrimary("replica-host", c.replica.URL)
		r := do(t, http.MethodPut, c.replica.URL+"/items/1", "x", "")
		if r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "no longer the primary") {
			t.Fatalf("got %d %q, want 503 saying the node is no longer the primary", r.status, r.body)
		}
	})
}

func TestProxy_Health(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.primaryNode.mu.Lock()
	c.primaryNode.lag = time.Hour // ignored on the primary
	c.primaryNode.mu.Unlock()
	check := func(url string, wantStatus int, wantBody string) {
		t.Helper()
		r := do(t, http.MethodGet, url+proxy.HealthPath, "", "")
		if r.status != wantStatus || !strings.Contains(r.body, wantBody) {
			t.Errorf("GET %s: %d %q, want %d with %q", proxy.HealthPath, r.status, r.body, wantStatus, wantBody)
		}
		if r.seen.App != "" {
			t.Errorf("the app answered the health route")
		}
		if h := do(t, http.MethodHead, url+proxy.HealthPath, "", ""); h.status != wantStatus {
			t.Errorf("HEAD %s: %d, want %d", proxy.HealthPath, h.status, wantStatus)
		}
	}
	check(c.primary.URL, http.StatusOK, "OK\n")
	check(c.replica.URL, http.StatusOK, "OK\n")
	c.replicaNode.mu.Lock()
	c.replicaNode.lag = 10 * time.Second // at max-lag: still healthy
	c.replicaNode.mu.Unlock()
	check(c.replica.URL, http.StatusOK, "OK\n")
	c.replicaNode.mu.Lock()
	c.replicaNode.lag = 12 * time.Second
	c.replicaNode.mu.Unlock()
	check(c.replica.URL, http.StatusServiceUnavailable, "12s behind the primary, more than max-lag 10s")
}

func TestProxy_WebSocket(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.replicaNode.setTXID(4)
	tests := []struct {
		name, url, path, txid string
	}{
		{"primary", c.primary.URL, "/ws", ""},
		{"replica GET", c.replica.URL, "/ws", "0000000000000004"},
		{"replica always-forward", c.replica.URL, "/fwd/ws", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := upgrade(t, strings.TrimPrefix(tt.url, "http://"), tt.path, tt.txid)
			for _, msg := range []string{"hello", "second message"} {
				if _, err := conn.w.Write([]byte(msg)); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(conn.r, got); err != nil {
					t.Fatalf("read the echo: %v", err)
				}
				if string(got) != msg {
					t.Fatalf("echo %q, want %q", got, msg)
				}
			}
		})
	}
}

// upgraded is a raw connection after a 101 answer.
type upgraded struct {
	r io.Reader
	w net.Conn
}

// upgrade dials addr and performs a WebSocket-style upgrade on path by hand.
func upgrade(t testing.TB, addr, path, txid string) upgraded {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	var req bytes.Buffer
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", path, addr)
	req.WriteString("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
	if txid != "" {
		fmt.Fprintf(&req, "Cookie: %s=%s\r\n", proxy.TXIDCookie, txid)
	}
	req.WriteString("\r\n")
	if _, err := conn.Write(req.Bytes()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		t.Fatalf("read the upgrade response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		t.Fatalf("upgrade answered %s %q, want 101 Switching Protocols", resp.Status, b)
	}
	return upgraded{r: br, w: conn}
}

func TestProxy_AppDown(t *testing.T) {
	t.Parallel()
	down := closedAddr(t)
	node := newFakeNode()
	node.primary = true
	_, s := newProxy(t, testConfig(down, node))
	r := do(t, http.MethodGet, s.URL+"/items", "", "")
	if r.status != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", r.status)
	}
	for _, want := range []string{"the app at " + down, "is not answering"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("body %q does not say %q", r.body, want)
		}
	}
}

func TestProxy_PrimaryDown(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	down := "http://" + closedAddr(t)
	c.replicaNode.setPrimary("gone-host", down)
	r := do(t, http.MethodPost, c.replica.URL+"/items", "x", "")
	if r.status != http.StatusBadGateway {
		t.Fatalf("status %d, want 502: %s", r.status, r.body)
	}
	for _, want := range []string{"the primary's proxy at " + down, `"gone-host"`, "not reachable"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("body %q does not say %q", r.body, want)
		}
	}

	t.Run("bad URL", func(t *testing.T) {
		c.replicaNode.setPrimary("odd-host", "odd-host:8080")
		r := do(t, http.MethodPost, c.replica.URL+"/items", "x", "")
		if r.status != http.StatusBadGateway || !strings.Contains(r.body, `"odd-host:8080"`) {
			t.Fatalf("got %d %q, want 502 naming the URL", r.status, r.body)
		}
	})
}

func TestConfig_Validate(t *testing.T) {
	node := newFakeNode()
	valid := func() proxy.Config {
		c := proxy.DefaultConfig()
		c.Addr, c.Target, c.DB, c.Node = ":8080", "localhost:8081", "app.db", node
		return c
	}
	if err := valid().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	tests := []struct {
		name   string
		modify func(*proxy.Config)
		want   string
	}{
		{"no target", func(c *proxy.Config) { c.Target = "" }, "proxy.target is required when proxy.addr is set"},
		{"target no port", func(c *proxy.Config) { c.Target = "localhost" }, `proxy.target "localhost" is not a host:port`},
		{"target URL", func(c *proxy.Config) { c.Target = "http://localhost:8081" }, "proxy.target"},
		{"target no host", func(c *proxy.Config) { c.Target = ":8081" }, `use e.g. "localhost:8081"`},
		{"bad addr", func(c *proxy.Config) { c.Addr = "8080" }, `proxy.addr "8080"`},
		{"no db", func(c *proxy.Config) { c.DB = "" }, "proxy.db is required"},
		{"empty passthrough", func(c *proxy.Config) { c.Passthrough = []string{"/a", ""} }, "proxy.passthrough[1] is empty"},
		{"empty always-forward", func(c *proxy.Config) { c.AlwaysForward = []string{""} }, "proxy.always-forward[0] is empty"},
		{"negative max-lag", func(c *proxy.Config) { c.MaxLag = -time.Second }, "proxy.max-lag is -1s"},
		{"negative redirect timeout", func(c *proxy.Config) { c.PrimaryRedirectTimeout = -time.Second }, "proxy.primary-redirect-timeout is -1s"},
		{"zero max-lag", func(c *proxy.Config) { c.MaxLag = 0 }, "proxy.max-lag is 0s"},
		{"zero redirect timeout", func(c *proxy.Config) { c.PrimaryRedirectTimeout = 0 }, "proxy.primary-redirect-timeout is 0s"},
		{"no node", func(c *proxy.Config) { c.Node = nil }, "Node"},
		{"negative read-timeout", func(c *proxy.Config) { c.ReadTimeout = -time.Second }, "proxy.read-timeout is -1s"},
		{"negative read-header-timeout", func(c *proxy.Config) { c.ReadHeaderTimeout = -time.Second }, "proxy.read-header-timeout is -1s"},
		{"negative write-timeout", func(c *proxy.Config) { c.WriteTimeout = -time.Second }, "proxy.write-timeout is -1s"},
		{"negative idle-timeout", func(c *proxy.Config) { c.IdleTimeout = -time.Second }, "proxy.idle-timeout is -1s"},
		{"zero trusted proxy", func(c *proxy.Config) { c.TrustedProxies = []netip.Prefix{{}} }, "proxy.trusted-proxies[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.modify(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error saying %q", err, tt.want)
			}
			if _, err := proxy.New(c); err == nil {
				t.Fatal("New accepted the config")
			}
		})
	}
	t.Run("no addr", func(t *testing.T) {
		c := valid()
		c.Addr = ""
		if err := c.Validate(); err != nil {
			t.Fatalf("Validate() = %v; a proxy used only as a Handler needs no addr", err)
		}
		p, err := proxy.New(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "proxy.addr is not set") {
			t.Fatalf("Run without addr = %v", err)
		}
	})
}

// TestProxy_Run is not parallel: it counts goroutines.
func TestProxy_Run(t *testing.T) {
	app := newApp(t, "app")
	node := newFakeNode()
	node.primary = true
	client := &http.Client{Transport: &http.Transport{}}
	before := runtime.NumGoroutine()

	cfg := testConfig(app.Listener.Addr().String(), node)
	cfg.Addr, cfg.DB, cfg.Logger = "127.0.0.1:0", "app.db", slog.New(slog.DiscardHandler)
	p, err := proxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if p.Addr() != nil {
		t.Fatalf("Addr() = %v before Run", p.Addr())
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	waitFor(t, func() bool { return p.Addr() != nil })
	base := "http://" + p.Addr().String()

	resp, err := client.Post(base+"/items", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST through Run: %d", resp.StatusCode)
	}
	// An upgraded connection open at shutdown is cut off, not waited for.
	ws := upgrade(t, p.Addr().String(), "/ws", "")

	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
	if _, err := io.ReadAll(ws.r); err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Fatalf("the upgraded connection after shutdown: %v", err)
	}
	ws.w.Close()
	client.CloseIdleConnections()
	if _, err := net.Dial("tcp", p.Addr().String()); err == nil {
		t.Error("the proxy still accepts connections after Run returned")
	}
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before })
}

func TestProxy_RunListenError(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig("localhost:1", newFakeNode())
	cfg.Addr, cfg.DB = ln.Addr().String(), "app.db"
	p, err := proxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = p.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "proxy.addr") || !strings.Contains(err.Error(), "free one") {
		t.Fatalf("Run on a busy port = %v, want an error naming proxy.addr and what to do", err)
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
