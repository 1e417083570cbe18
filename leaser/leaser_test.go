package leaser

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestStatic(t *testing.T) {
	ctx := context.Background()
	primary := Info{Hostname: "p1", AdvertiseURL: "http://p1:20202"}
	l, err := NewStatic(true, primary).Acquire(ctx)
	if err != nil || l.Epoch() != 1 || l.Lost() != nil {
		t.Fatalf("candidate: lease %v, %v; want epoch 1, never lost", l, err)
	}
	if err := l.Release(ctx); err == nil || !strings.Contains(err.Error(), "lease.candidate") {
		t.Fatalf("release of a static lease: %v, want an error naming lease.candidate", err)
	}
	var held *HeldError
	if _, err := NewStatic(false, primary).Acquire(ctx); !errors.As(err, &held) || held.Holder != primary || !errors.Is(err, ErrHeld) {
		t.Fatalf("replica: %v, want ErrHeld naming p1", err)
	}
	if got, err := NewStatic(false, primary).Primary(ctx); err != nil || got != primary {
		t.Fatalf("Primary: %v, %v", got, err)
	}
	if _, err := NewStatic(false, Info{}).Primary(ctx); !errors.Is(err, ErrNoPrimary) {
		t.Fatalf("no primary configured: %v, want ErrNoPrimary", err)
	}
}

func TestConsulConfig_Refused(t *testing.T) {
	good := ConsulConfig{URL: "http://127.0.0.1:8500", Key: "litefs/primary", TTL: 10 * time.Second, LockDelay: time.Second, Node: Info{Hostname: "n1"}}
	for _, tc := range []struct {
		name, want string
		edit       func(*ConsulConfig)
	}{
		{"no url", "lease.consul.url", func(c *ConsulConfig) { c.URL = "" }},
		{"not http", "lease.consul.url", func(c *ConsulConfig) { c.URL = "consul:8500" }},
		{"no key", "lease.consul.key", func(c *ConsulConfig) { c.Key = "" }},
		{"short ttl", "lease.consul.ttl", func(c *ConsulConfig) { c.TTL = time.Second }},
		{"negative lock-delay", "lease.consul.lock-delay", func(c *ConsulConfig) { c.LockDelay = -time.Second }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.edit(&c)
			if _, err := NewConsul(c); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err=%v, want one naming %s", err, tc.want)
			}
		})
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
func TestConsul_RefusedConnectionSaysWhatToCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	l, err := NewConsul(ConsulConfig{URL: "http://:tok@" + addr, Key: "litefs/primary", TTL: 10 * time.Second, Candidate: true, Node: Info{Hostname: "n1"}})
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

func TestConsul_NonCandidateNeverAcquires(t *testing.T) {
	l, err := NewConsul(ConsulConfig{URL: "http://127.0.0.1:1", Key: "k", TTL: 10 * time.Second, Node: Info{Hostname: "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(context.Background()); !errors.Is(err, ErrNotCandidate) {
		t.Fatalf("err=%v, want ErrNotCandidate", err)
	}
}
