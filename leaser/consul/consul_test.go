package consul

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/safego/safegotest"
	"github.com/pagewire/pagewire/leaser"
)

func TestDefaultConfig_ValidOnceURLAndNodeAreSet(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "lease.consul.url") {
		t.Fatalf("without a URL: %v, want an error naming lease.consul.url", err)
	}
	cfg.URL, cfg.Node = "http://127.0.0.1:8500", leaser.Info{Hostname: "n1"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestNew_RefusesBadConfig(t *testing.T) {
	good := Config{URL: "http://127.0.0.1:8500", Key: "litefs/primary", TTL: 10 * time.Second, LockDelay: time.Second, Node: leaser.Info{Hostname: "n1"}}
	for _, tc := range []struct {
		name, want string
		edit       func(*Config)
	}{
		{"no url", "lease.consul.url", func(c *Config) { c.URL = "" }},
		{"not http", "lease.consul.url", func(c *Config) { c.URL = "consul:8500" }},
		{"no key", "lease.consul.key", func(c *Config) { c.Key = "" }},
		{"short ttl", "lease.consul.ttl", func(c *Config) { c.TTL = time.Second }},
		{"negative lock-delay", "lease.consul.lock-delay", func(c *Config) { c.LockDelay = -time.Second }},
		{"negative check-ttl", "lease.consul.check-ttl", func(c *Config) { c.CheckTTL = -time.Second }},
		{"short check-ttl", "lease.consul.check-ttl", func(c *Config) { c.CheckTTL = 100 * time.Millisecond }},
		{"check-ttl as long as ttl", "lease.consul.check-ttl", func(c *Config) { c.CheckTTL = 10 * time.Second }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.edit(&c)
			if _, err := New(c); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err=%v, want one naming %s", err, tc.want)
			}
		})
	}
}

func TestConfig_CheckTTLZeroOrWithinBounds(t *testing.T) {
	for _, d := range []time.Duration{0, time.Second, DefaultCheckTTL, 9 * time.Second} {
		c := Config{URL: "http://127.0.0.1:8500", Key: "k", TTL: 10 * time.Second, CheckTTL: d, Node: leaser.Info{Hostname: "n1"}}
		if err := c.Validate(); err != nil {
			t.Fatalf("check-ttl %s: %v", d, err)
		}
	}
}

// Check IDs are unique per hostname and key, and safe in a URL path
// whatever the hostname holds.
func TestLeaser_CheckIDPerHostnameAndKey(t *testing.T) {
	id := func(host, key string) string {
		l, err := New(Config{URL: "http://127.0.0.1:8500", Key: key, TTL: 10 * time.Second, Node: leaser.Info{Hostname: host}})
		if err != nil {
			t.Fatal(err)
		}
		return l.CheckID()
	}
	a, b, c := id("node1", "litefs/primary"), id("node2", "litefs/primary"), id("node1", "litefs/other")
	if a == b || a == c || !strings.HasPrefix(a, "pagewire-node1-") {
		t.Fatalf("IDs %q %q %q: want distinct, named after the node", a, b, c)
	}
	if a != id("node1", "litefs/primary") {
		t.Fatal("the ID is not stable")
	}
	for _, host := range []string{"a/../b", "x?y#z", "é n\t", "%2F"} {
		got := id(host, "k")
		if strings.ContainsAny(got, "/?#% \t\\") || strings.ContainsFunc(got, func(r rune) bool { return r >= 0x80 }) {
			t.Fatalf("hostname %q: check ID %q is not URL-path safe", host, got)
		}
	}
}

func TestAPIConfig_TokenAndRedaction(t *testing.T) {
	for raw, want := range map[string]string{
		"https://:s3cret@consul-fra.fly-shared.net/my-app-xyz/": "s3cret",
		"http://tok@127.0.0.1:8500":                             "tok",
		"http://127.0.0.1:8500/?token=q1":                       "q1",
	} {
		cfg, err := apiConfig(raw)
		if err != nil || cfg.Token != want {
			t.Fatalf("%s: token %q, %v; want %q", raw, cfg.Token, err, want)
		}
		if strings.Contains(redact(raw), want) {
			t.Fatalf("redact(%s) = %s still shows the token", raw, redact(raw))
		}
	}
	if cfg, _ := apiConfig("https://:x@consul-fra.fly-shared.net/my-app-xyz/"); cfg.PathPrefix != "/my-app-xyz" || cfg.Address != "consul-fra.fly-shared.net" {
		t.Fatalf("Fly URL: address %q prefix %q", cfg.Address, cfg.PathPrefix)
	}
}

// A Consul that refuses connections is an error that says what to check,
// as LiteFS users see "waiting for consul connection ... connection refused".
func TestLeaser_RefusedConnectionSaysWhatToCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	l, err := New(Config{URL: "http://:tok@" + addr, Key: "litefs/primary", TTL: 10 * time.Second, Candidate: true, Node: leaser.Info{Hostname: "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = l.Acquire(ctx)
	if err == nil || !strings.Contains(err.Error(), "lease.consul.url") || !strings.Contains(err.Error(), "FLY_CONSUL_URL") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err=%v, want connection refused with what to check", err)
	}
	if strings.Contains(err.Error(), "tok@") {
		t.Fatalf("the error shows the token: %v", err)
	}
	if _, err := l.Primary(ctx); err == nil || !strings.Contains(err.Error(), "lease.consul.url") {
		t.Fatalf("Primary: %v", err)
	}
}

func TestLeaser_NonCandidateNeverAcquires(t *testing.T) {
	l, err := New(Config{URL: "http://127.0.0.1:1", Key: "k", TTL: 10 * time.Second, Node: leaser.Info{Hostname: "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(context.Background()); !errors.Is(err, leaser.ErrNotCandidate) {
		t.Fatalf("err=%v, want ErrNotCandidate", err)
	}
}

// A panic in the renewing goroutine loses the lease, so that the node
// stops taking writes, instead of leaving it held with nobody renewing it.
func TestHeldLease_PanicInRenewLosesTheLease(t *testing.T) {
	rec := safegotest.NewRecorder()
	// No Consul client: the first renewal panics on it.
	l := &Leaser{cfg: Config{TTL: 100 * time.Millisecond}, log: rec.Logger()}
	ls := &heldLease{l: l, id: "s1", epoch: 7, fence: fence{ttl: l.cfg.TTL}, lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{}), renewed: time.Now()}
	go ls.run()
	select {
	case <-ls.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the renewing goroutine did not end")
	}
	select {
	case <-ls.Lost():
	default:
		t.Fatal("the lease is not lost after its renewing goroutine panicked")
	}
	// The clean-up after it panics too, on the missing client, and is caught as well.
	if got := rec.Panics(); len(got) == 0 || got[0].Task != "renew the lease" {
		t.Fatalf("logged %+v, want the panic", got)
	}
}
