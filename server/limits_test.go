package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	client "github.com/pagewire/pagewire/clients/go"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
	"github.com/pagewire/pagewire/server"
)

// shortLimits are DefaultLimits with timeouts that run out within a test.
func shortLimits() server.Limits {
	l := server.DefaultLimits()
	l.HandshakeTimeout = 300 * time.Millisecond
	l.ReadHeaderTimeout = 300 * time.Millisecond
	l.ReadTimeout = 300 * time.Millisecond
	l.WriteTimeout = 300 * time.Millisecond
	l.IdleTimeout = 300 * time.Millisecond
	return l
}

// dialFrom connects to addr from the loopback address ip (Linux routes all
// of 127.0.0.0/8 to the loopback device).
func dialFrom(t testing.TB, ip, addr string) net.Conn {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ip, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// httpFrom is an HTTP/1.1 client whose connections come from ip and are
// not kept.
func httpFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}, Timeout: 5 * time.Second}
}

// closedByServer reads c until the node closes it, and fails if it has not
// within 20s (a timeout or limit that does not act would leave it open).
func closedByServer(t testing.TB, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("the node kept the connection open (read %q)", b)
	case err != nil && !errors.Is(err, syscall.ECONNRESET):
		t.Fatalf("read: %v", err)
	}
	return b
}

// writeUntilClosed writes chunks to c until the node closes it, and fails
// if it has not within 20s.
func writeUntilClosed(t testing.TB, c net.Conn, next func() []byte) {
	t.Helper()
	_ = c.SetWriteDeadline(time.Now().Add(20 * time.Second))
	total := 0
	for {
		n, err := c.Write(next())
		total += n
		var ne net.Error
		switch {
		case err == nil:
			continue
		case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
			t.Fatalf("the node kept reading (or stopped reading without closing) after %d bytes", total)
		case !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE):
			t.Fatalf("write: %v", err)
		}
		return
	}
}

// eventually calls f until it succeeds, failing after 30s with its last error.
func eventually(t testing.TB, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 30s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// healthCall makes one gRPC health check on a new connection to addr.
func healthCall(addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := healthgrpc.NewHealthClient(conn).Check(ctx, &healthgrpc.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthgrpc.HealthCheckResponse_SERVING {
		return fmt.Errorf("health %v", resp.GetStatus())
	}
	return nil
}

// httpCall makes one GET /healthz from ip.
func httpCall(addr, ip string) error {
	resp, err := httpFrom(ip).Get("http://" + addr + "/healthz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /healthz: %d", resp.StatusCode)
	}
	return nil
}

// pingFrame is an HTTP/2 PING frame.
func pingFrame() []byte {
	var b bytes.Buffer
	_ = http2.NewFramer(&b, nil).WritePing(false, [8]byte{1, 2, 3})
	return b.Bytes()
}

func TestPortSplit_SnifferGivesUp(t *testing.T) {
	addr, _, _ := startTCPServerWith(t, func(c *server.Config) { c.Limits = shortLimits() })

	// Clients that stall: each is closed once its time is up.
	for _, tt := range []struct{ name, first string }{
		{"nothing", ""},
		{"one byte of the HTTP/2 preface", "P"},
		{"half the HTTP/2 preface", http2.ClientPreface[:16]},
		{"the preface and no SETTINGS", http2.ClientPreface},
		{"one byte of HTTP/1", "G"},
		{"half an HTTP/1 request", "GET /healthz HTTP/1.1\r\nHost: x\r\n"},
	} {
		t.Run("stalls after "+tt.name, func(t *testing.T) {
			t.Parallel()
			c := dialFrom(t, "127.0.0.1", addr)
			if _, err := io.WriteString(c, tt.first); err != nil {
				t.Fatal(err)
			}
			if b := closedByServer(t, c); bytes.Contains(b, []byte("200 OK")) {
				t.Fatalf("answered: %q", b)
			}
		})
	}

	// Clients that never stop sending.
	t.Run("endless frames after the preface", func(t *testing.T) {
		t.Parallel()
		c := dialFrom(t, "127.0.0.1", addr)
		first := true
		ping := bytes.Repeat(pingFrame(), 64)
		writeUntilClosed(t, c, func() []byte {
			if first {
				first = false
				return []byte(http2.ClientPreface)
			}
			return ping
		})
	})
	t.Run("endless non-HTTP bytes", func(t *testing.T) {
		t.Parallel()
		c := dialFrom(t, "127.0.0.1", addr)
		buf := make([]byte, 4096)
		writeUntilClosed(t, c, func() []byte { rand.Read(buf); return buf })
	})
	t.Run("endless HTTP/1 header", func(t *testing.T) {
		t.Parallel()
		c := dialFrom(t, "127.0.0.1", addr)
		first := true
		writeUntilClosed(t, c, func() []byte {
			if first {
				first = false
				return []byte("GET / HTTP/1.1\r\nX-Long: ")
			}
			return bytes.Repeat([]byte("a"), 4096)
		})
	})
	t.Run("a frame over 16 KiB before the first request", func(t *testing.T) {
		t.Parallel()
		c := dialFrom(t, "127.0.0.1", addr)
		hdr := []byte{0x10, 0, 0, byte(http2.FrameData), 0, 0, 0, 0, 1} // 1 MiB of DATA on stream 1
		if _, err := c.Write(append([]byte(http2.ClientPreface), hdr...)); err != nil {
			t.Fatal(err)
		}
		closedByServer(t, c)
	})

	// And the port still serves.
	if err := healthCall(addr); err != nil {
		t.Fatalf("gRPC after the hostile clients: %v", err)
	}
	if err := httpCall(addr, "127.0.0.1"); err != nil {
		t.Fatalf("HTTP after the hostile clients: %v", err)
	}
}

// 1,000 idle connections, from another address or from the same one as
// the real clients, do not keep a gRPC call and an HTTP request out.
func TestServer_IdleConnectionsDoNotStarveClients(t *testing.T) {
	addr, _, _ := startTCPServerWith(t, func(c *server.Config) { c.Limits = shortLimits() })
	for _, from := range []string{"127.0.0.2", "127.0.0.1"} {
		t.Run("idle from "+from, func(t *testing.T) {
			idle := make([]net.Conn, 0, 1000)
			for i := range 1000 {
				c := dialFrom(t, from, addr)
				if i%2 == 1 {
					_, _ = io.WriteString(c, "P") // and no more
				}
				idle = append(idle, c)
			}
			eventually(t, "a gRPC call", func() error { return healthCall(addr) })
			eventually(t, "an HTTP request", func() error { return httpCall(addr, "127.0.0.1") })

			// Every idle connection is closed: by the limit or the handshake timeout.
			for _, c := range idle {
				closedByServer(t, c)
				c.Close()
			}
		})
	}
}

func TestServer_ConnectionLimits(t *testing.T) {
	addr, _, _ := startTCPServerWith(t, func(c *server.Config) {
		c.Limits.MaxConns, c.Limits.MaxConnsPerIP = 8, 4
		c.Limits.HandshakeTimeout = time.Hour // idle connections stay
	})
	idle := func(ip string, n int) []net.Conn {
		var cs []net.Conn
		for range n {
			cs = append(cs, dialFrom(t, ip, addr))
		}
		return cs
	}

	// One address gets 4; the 5th is closed at once (the node accepts in
	// order, so the first 4 are counted by then).
	idle("127.0.0.2", 4)
	closedByServer(t, dialFrom(t, "127.0.0.2", addr))
	// Another address is served.
	if err := httpCall(addr, "127.0.0.3"); err != nil {
		t.Fatalf("a request from another address: %v", err)
	}

	// 8 in all: a third address is refused, until one closes. (The
	// request's connection from 127.0.0.3 may not be released by the node
	// yet, so one of these may be refused per address instead; and until
	// it is released, a connection from 127.0.0.4 may be let in. Dial
	// until one is refused.)
	third := idle("127.0.0.3", 4)
	eventually(t, "a connection over the total limit refused", func() error {
		c := dialFrom(t, "127.0.0.4", addr)
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil && !os.IsTimeout(err) {
			return nil // closed by the node
		}
		return errors.New("the node kept a connection over the limit")
	})
	for _, c := range third {
		c.Close()
	}
	eventually(t, "a request once connections closed", func() error { return httpCall(addr, "127.0.0.4") })

	// Both refusals are counted.
	resp, err := httpFrom("127.0.0.4").Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, limit := range []string{"per_ip", "total"} {
		series := `pagewire_api_connections_refused_total{limit="` + limit + `"} `
		i := strings.Index(string(body), series)
		if i < 0 || strings.HasPrefix(string(body[i+len(series):]), "0\n") {
			t.Errorf("/metrics counts no %s refusal", limit)
		}
	}
}

func TestServer_HTTPTimeouts(t *testing.T) {
	addr, _, _ := startTCPServerWith(t, func(c *server.Config) {
		c.Limits = shortLimits()
		c.Heartbeat = 50 * time.Millisecond
	})

	t.Run("an idle kept-alive connection is closed", func(t *testing.T) {
		c := dialFrom(t, "127.0.0.1", addr)
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		b := closedByServer(t, c)
		if !bytes.HasPrefix(b, []byte("HTTP/1.1 200 OK")) || bytes.Count(b, []byte("HTTP/1.1")) != 1 {
			t.Fatalf("got %q, want one answer, then the connection closed", b)
		}
	})

	// Long streams are not the HTTP timeouts' business.
	watchFor := func(t *testing.T, recv func() error) {
		t.Helper()
		deadline := time.Now().Add(time.Second) // over three times every timeout
		for n := 0; time.Now().Before(deadline); n++ {
			if err := recv(); err != nil {
				t.Fatalf("message %d: %v", n, err)
			}
		}
	}
	t.Run("a gRPC stream outlives the HTTP timeouts", func(t *testing.T) {
		conn, err := client.Dial("http://" + addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s, err := replicationv1.NewReplicationServiceClient(conn).WatchDatabases(ctx, &replicationv1.WatchDatabasesRequest{Hostname: "r1"})
		if err != nil {
			t.Fatal(err)
		}
		watchFor(t, func() error { _, err := s.Recv(); return err })
	})
	t.Run("a gRPC stream on an HTTP connection outlives the HTTP timeouts", func(t *testing.T) {
		// h2c: a first request to the API makes it an HTTP connection; the
		// stream on it is served through the HTTP server.
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr}
		resp, err := hc.Get("http://" + addr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()

		msg, err := proto.Marshal(&replicationv1.WatchDatabasesRequest{Hostname: "r2"})
		if err != nil {
			t.Fatal(err)
		}
		frame := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
		req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/pagewire.replication.v1.ReplicationService/WatchDatabases",
			bytes.NewReader(append(frame, msg...)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("TE", "trailers")
		resp, err = hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			t.Fatalf("%s %d", resp.Proto, resp.StatusCode)
		}
		watchFor(t, func() error {
			var hdr [5]byte
			if _, err := io.ReadFull(resp.Body, hdr[:]); err != nil {
				return fmt.Errorf("%w (grpc-status %q %q)", err, resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message"))
			}
			_, err := io.CopyN(io.Discard, resp.Body, int64(binary.BigEndian.Uint32(hdr[1:])))
			return err
		})
	})
}

// A client that pings as internal/wire's Dial does (every 10s, with no
// call open) keeps its connection: the node's keepalive policy allows it.
func TestServer_GRPCKeepaliveAllowsClientPings(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 45s for the client's pings")
	}
	addr, _ := startTCPServer(t)
	conn, err := client.Dial("http://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	grpcHealth(t, conn)
	// grpc-go's default policy counts each ping after the first without a
	// call as a strike, and closes the connection at the third (40s).
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	if conn.WaitForStateChange(ctx, connectivity.Ready) {
		t.Fatalf("the idle connection went from READY to %v", conn.GetState())
	}
	grpcHealth(t, conn)
}

func TestServer_IsReplica(t *testing.T) {
	addr, srv, _ := startTCPServerWith(t, nil)
	local, other := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	if srv.IsReplica(local) {
		t.Fatal("IsReplica before any replica watches")
	}
	conn, err := client.Dial("http://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := replicationv1.NewReplicationServiceClient(conn).WatchDatabases(ctx, &replicationv1.WatchDatabasesRequest{Hostname: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	if !srv.IsReplica(local) || !srv.IsReplica(netip.MustParseAddr("::ffff:127.0.0.1")) {
		t.Error("IsReplica(127.0.0.1) is false while a replica watches from there")
	}
	if srv.IsReplica(other) {
		t.Error("IsReplica(127.0.0.2) is true")
	}
	cancel()
	eventually(t, "IsReplica false once the stream ended", func() error {
		if srv.IsReplica(local) {
			return errors.New("still a replica")
		}
		return nil
	})
}
