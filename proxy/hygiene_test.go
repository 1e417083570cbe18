package proxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pagewire/pagewire/proxy"
)

// fromAddr returns an HTTP client whose connections come from the loopback
// address ip (Linux routes all of 127.0.0.0/8 to the loopback device).
func fromAddr(t testing.TB, ip string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// send sends a request with the headers hdr through client and returns what
// the app saw.
func send(t testing.TB, client *http.Client, method, url string, hdr map[string]string) seen {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var s seen
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &s) != nil {
		t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	return s
}

// forged are the headers a client sends to pass as someone else.
var forged = map[string]string{
	"X-Forwarded-For":   "203.0.113.9",
	"X-Forwarded-Host":  "bank.example",
	"X-Forwarded-Proto": "https",
	"Forwarded":         "for=203.0.113.9;proto=https",
}

// checkOwn checks that the app saw what the proxy itself saw of a client
// at ip that asked for host, and none of the forged headers.
func checkOwn(t testing.TB, s seen, ip, host string) {
	t.Helper()
	if s.XFF != ip || s.XFHost != host || s.XFProto != "http" || s.Forwarded != "" {
		t.Errorf("the app saw X-Forwarded-For %q, -Host %q, -Proto %q, Forwarded %q; want %q, %q, \"http\", none",
			s.XFF, s.XFHost, s.XFProto, s.Forwarded, ip, host)
	}
}

func TestProxy_UntrustedForwardedHeaders(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil) // the primary's peer: 127.0.0.1, the replica's proxy
	client := fromAddr(t, "127.0.0.1")
	primaryHost := c.primary.Listener.Addr().String()
	replicaHost := c.replica.Listener.Addr().String()

	t.Run("client to the primary", func(t *testing.T) {
		s := send(t, client, http.MethodPost, c.primary.URL+"/items", forged)
		checkOwn(t, s, "127.0.0.1", primaryHost)
	})

	t.Run("client to a replica's app", func(t *testing.T) {
		s := send(t, client, http.MethodGet, c.replica.URL+"/items", forged)
		if s.App != "replica-app" {
			t.Fatalf("served by %q", s.App)
		}
		checkOwn(t, s, "127.0.0.1", replicaHost)
	})

	t.Run("client through a replica to the primary", func(t *testing.T) {
		// The replica replaces the forged headers; the primary trusts the
		// replica's and adds the hop.
		s := send(t, client, http.MethodPost, c.replica.URL+"/items", forged)
		if s.App != "primary-app" || s.ForwardedBy == "" {
			t.Fatalf("the primary's app saw %+v", s)
		}
		if s.XFF != "127.0.0.1, 127.0.0.1" || s.XFHost != replicaHost || s.XFProto != "http" || s.Forwarded != "" {
			t.Errorf("the app saw X-Forwarded-For %q, -Host %q, -Proto %q, Forwarded %q; want the client's as the replica saw it",
				s.XFF, s.XFHost, s.XFProto, s.Forwarded)
		}
	})

	t.Run("forged forward from an address that is no peer", func(t *testing.T) {
		hdr := map[string]string{proxy.ForwardedByHeader: "replica-host"}
		for k, v := range forged {
			hdr[k] = v
		}
		s := send(t, fromAddr(t, "127.0.0.2"), http.MethodPost, c.primary.URL+"/items", hdr)
		checkOwn(t, s, "127.0.0.2", primaryHost)
		if s.ForwardedBy != "" {
			t.Errorf("the app saw a forged %s: %q", proxy.ForwardedByHeader, s.ForwardedBy)
		}
	})

	t.Run("a peer's address without the forwarding header", func(t *testing.T) {
		// 127.0.0.1 is a peer, but this is a client, not a forwarded write.
		s := send(t, client, http.MethodPost, c.primary.URL+"/items", forged)
		checkOwn(t, s, "127.0.0.1", primaryHost)
	})
}

func TestProxy_TrustedProxies(t *testing.T) {
	t.Parallel()
	app := newApp(t, "app")
	node := newFakeNode()
	node.primary = true
	cfg := testConfig(app.Listener.Addr().String(), node)
	cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	_, p := newProxy(t, cfg)

	// From the trusted load balancer: kept, and the hop added.
	s := send(t, fromAddr(t, "127.0.0.1"), http.MethodPost, p.URL+"/items", forged)
	if s.XFF != "203.0.113.9, 127.0.0.1" || s.XFHost != "bank.example" || s.XFProto != "https" {
		t.Errorf("from a trusted proxy the app saw X-Forwarded-For %q, -Host %q, -Proto %q; want them kept and the hop added",
			s.XFF, s.XFHost, s.XFProto)
	}

	// From elsewhere: replaced.
	s = send(t, fromAddr(t, "127.0.0.2"), http.MethodPost, p.URL+"/items", forged)
	checkOwn(t, s, "127.0.0.2", p.Listener.Addr().String())
}

// runProxy runs a proxy with cfg on a loopback port until the test ends
// and returns its address.
func runProxy(t *testing.T, cfg proxy.Config) string {
	t.Helper()
	cfg.Addr, cfg.DB, cfg.Logger = "127.0.0.1:0", "app.db", slog.New(slog.DiscardHandler)
	p, err := proxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	waitFor(t, func() bool { return p.Addr() != nil })
	return p.Addr().String()
}

// closedByServer reads c until the proxy closes it, and fails if it has
// not within 10s: a timeout that does not fire would leave it open.
func closedByServer(t *testing.T, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("the proxy kept the connection open (read %q so far)", b)
	case err != nil && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatalf("read: %v", err)
	}
	return b
}

func TestProxy_RunTimeouts(t *testing.T) {
	t.Parallel()
	app := newApp(t, "app")
	node := newFakeNode()
	node.primary = true

	t.Run("slow headers are cut after read-header-timeout", func(t *testing.T) {
		t.Parallel()
		cfg := testConfig(app.Listener.Addr().String(), node)
		cfg.ReadHeaderTimeout = 200 * time.Millisecond
		addr := runProxy(t, cfg)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Half a request, then nothing.
		if _, err := io.WriteString(c, "GET /items HTTP/1.1\r\nHost: x\r\n"); err != nil {
			t.Fatal(err)
		}
		if b := closedByServer(t, c); strings.Contains(string(b), "200 OK") {
			t.Fatalf("a request without its end was answered: %q", b)
		}
	})

	t.Run("an idle kept-alive connection is closed after idle-timeout", func(t *testing.T) {
		t.Parallel()
		cfg := testConfig(app.Listener.Addr().String(), node)
		cfg.IdleTimeout = 200 * time.Millisecond
		addr := runProxy(t, cfg)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /items HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("first request: %d, close %v; want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
		}
		// Then nothing: the proxy closes the connection.
		if b := closedByServer(t, c); len(b) > 0 || br.Buffered() > 0 {
			t.Fatalf("the proxy sent %q on an idle connection", b)
		}
	})

	t.Run("a slow body is cut after read-timeout", func(t *testing.T) {
		t.Parallel()
		cfg := testConfig(app.Listener.Addr().String(), node)
		cfg.ReadTimeout = 300 * time.Millisecond
		addr := runProxy(t, cfg)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "POST /items HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx"); err != nil {
			t.Fatal(err)
		}
		if b := closedByServer(t, c); strings.Contains(string(b), "200 OK") {
			t.Fatalf("a request whose body never came was answered: %q", b)
		}
	})

	t.Run("an upgraded connection outlives the timeouts", func(t *testing.T) {
		t.Parallel()
		cfg := testConfig(app.Listener.Addr().String(), node)
		cfg.ReadTimeout, cfg.WriteTimeout, cfg.IdleTimeout = 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
		addr := runProxy(t, cfg)
		ws := upgrade(t, addr, "/ws", "")
		defer ws.w.Close()
		time.Sleep(time.Second) // past every timeout
		if _, err := io.WriteString(ws.w, "ping"); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(ws.r, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo after the timeouts: %q, %v", buf, err)
		}
	})
}
