package tlsfiles_test

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/tlsfiles"
	"github.com/pagewire/pagewire/internal/tlsfiles/tlsfilestest"
)

// serve accepts TLS connections on loopback until the test ends, completing
// each handshake; it returns the address.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
				_, _ = c.Read(make([]byte, 1))
			}()
		}
	}()
	return ln.Addr().String()
}

// serveFiles serves TLS with pair and the CA bundle caFile ("" for none)
// loaded through tlsfiles, as a node's port does; it returns the address.
func serveFiles(t *testing.T, pair tlsfilestest.Pair, caFile string, auth tlsfiles.ClientAuth) string {
	t.Helper()
	f, err := tlsfiles.Load(pair.CertFile, pair.KeyFile, caFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := f.Server(auth)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, cfg)
}

// handshake connects with cfg and returns the server certificate's name.
func handshake(addr string, cfg *tls.Config) (string, error) {
	cfg.ServerName = "localhost"
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	// With TLS 1.3 a rejected client certificate shows at the first read.
	_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
		return "", err
	}
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestFiles_ServesAndReloadsTheCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := tlsfilestest.NewCA(t, dir, "ca")
	srv := ca.Issue("server", "localhost")
	addr := serveFiles(t, srv, ca.CertFile, tlsfiles.NoClientCert)
	client, err := tlsfiles.Load("", "", ca.CertFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	if name, err := handshake(addr, client.Client()); err != nil || name != "server" {
		t.Fatalf("handshake: %q, %v; want the server certificate", name, err)
	}

	// A rotation writes new files in place: the port serves them without
	// a restart.
	rotated := ca.Issue("rotated", "localhost")
	for _, mv := range [][2]string{{rotated.KeyFile, srv.KeyFile}, {rotated.CertFile, srv.CertFile}} {
		if err := os.Rename(mv[0], mv[1]); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		name, err := handshake(addr, client.Client())
		if err != nil {
			t.Fatal(err)
		}
		if name == "rotated" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still serving %q after the files were replaced", name)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestFiles_BadRotationKeepsThePreviousCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := tlsfilestest.NewCA(t, dir, "ca")
	srv := ca.Issue("server", "localhost")
	addr := serveFiles(t, srv, "", tlsfiles.NoClientCert)
	if err := os.WriteFile(srv.CertFile, []byte("half-written"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // past the recheck interval, so the bad file is read
	client, err := tlsfiles.Load("", "", ca.CertFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	if name, err := handshake(addr, client.Client()); err != nil || name != "server" {
		t.Fatalf("handshake after a bad rotation: %q, %v; want the previous certificate", name, err)
	}
}

func TestFiles_RequireClientCert(t *testing.T) {
	dir := t.TempDir()
	ca := tlsfilestest.NewCA(t, dir, "ca")
	other := tlsfilestest.NewCA(t, dir, "other")
	srv := ca.Issue("server", "localhost")
	addr := serveFiles(t, srv, ca.CertFile, tlsfiles.RequireClientCert)

	good := ca.Issue("client", "client")
	stranger := other.Issue("stranger", "stranger")
	for _, tc := range []struct {
		name    string
		cert    tlsfilestest.Pair
		wantErr bool
	}{
		{"no certificate", tlsfilestest.Pair{}, true},
		{"certificate from another CA", stranger, true},
		{"certificate from the CA", good, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tlsfiles.Load(tc.cert.CertFile, tc.cert.KeyFile, ca.CertFile, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = handshake(addr, c.Client())
			if (err != nil) != tc.wantErr {
				t.Fatalf("handshake: %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

func TestLoad_BadFiles(t *testing.T) {
	dir := t.TempDir()
	ca := tlsfilestest.NewCA(t, dir, "ca")
	srv := ca.Issue("server", "localhost")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, cert, key, ca, want string
	}{
		{"cert without key", srv.CertFile, "", "", "set both"},
		{"missing cert file", filepath.Join(dir, "nope.pem"), srv.KeyFile, "", "no such file"},
		{"key of another cert", srv.CertFile, ca.Issue("x", "x").KeyFile, "", "tls.cert"},
		{"garbage CA", "", "", garbage, "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tlsfiles.Load(tc.cert, tc.key, tc.ca, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	f, err := tlsfiles.Load("", "", ca.CertFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Server(tlsfiles.NoClientCert); err == nil {
		t.Fatal("Server without a certificate: no error")
	}
	f, err = tlsfiles.Load(srv.CertFile, srv.KeyFile, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Server(tlsfiles.RequireClientCert); err == nil {
		t.Fatal("RequireClientCert without a CA: no error")
	}
}
