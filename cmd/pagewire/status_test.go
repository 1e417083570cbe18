package main

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
)

func TestReplicaSummary(t *testing.T) {
	rs := []*adminv1.Replica{
		{Hostname: "a", Txid: 100, Lag: durationpb.New(2 * time.Millisecond)},
		{Hostname: "b", Txid: 97, Lag: durationpb.New(15 * time.Millisecond)},
		{Hostname: "c", Txid: 101}, // acknowledged past the list's TXID: not behind
	}
	for _, tt := range []struct {
		role adminv1.Role
		rs   []*adminv1.Replica
		want string
	}{
		{adminv1.Role_ROLE_PRIMARY, rs, "3, max lag 3 tx/15ms"},
		{adminv1.Role_ROLE_PRIMARY, nil, "none"},
		{adminv1.Role_ROLE_REPLICA, rs, "-"},
	} {
		if got := replicaSummary(tt.role, 100, tt.rs); got != tt.want {
			t.Errorf("replicaSummary(%v, 100, %d replicas) = %q, want %q", tt.role, len(tt.rs), got, tt.want)
		}
	}
}

// TestStatusRender_Rate checks the RATE column: commits per second since
// the refresh before, "-" without one or for a database new since.
func TestStatusRender_Rate(t *testing.T) {
	at := time.Now()
	node := &adminv1.GetNodeResponse{Hostname: "n1", Role: adminv1.Role_ROLE_REPLICA, Primary: "n0"}
	prev := &nodeStatus{at: at, node: node, dbs: []*adminv1.Database{{Name: "a.db", Txid: 10}}}
	now := &nodeStatus{at: at.Add(2 * time.Second), node: node, dbs: []*adminv1.Database{{Name: "a.db", Txid: 30}, {Name: "b.db", Txid: 5}}}
	var b strings.Builder
	now.render(&b, prev)
	lines := strings.Split(b.String(), "\n")
	var a, nb string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "a.db"):
			a = l
		case strings.HasPrefix(l, "b.db"):
			nb = l
		}
	}
	if !strings.Contains(a, " 10.0 tx/s ") {
		t.Errorf("a.db went 10 -> 30 in 2 s, row %q, want 10.0 tx/s", a)
	}
	if f := strings.Fields(nb); len(f) < 7 || f[5] != "-" || f[6] != "-" {
		t.Errorf("b.db, new since the refresh before, on a replica: row %q, want RATE and REPLICAS \"-\"", nb)
	}
	if !strings.Contains(b.String(), "primary:  n0") {
		t.Errorf("render lacks the primary:\n%s", b.String())
	}
}
