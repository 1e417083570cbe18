package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/engine"
	"github.com/pagewire/pagewire/internal/logkey"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
)

// staticCheckInterval is how often a static primary looks at the node its
// lease.advertise-url names.
const staticCheckInterval = 5 * time.Second

// staticConflict watches for LiteFS's "common mistake": a config with
// lease.candidate: true copied to every node of a static lease, so that
// two nodes both take writes. A static primary whose lease.advertise-url
// reaches another node that is also a primary refuses writes (sending
// apps to that node, the one the config names) and reports the conflict
// in its log and /healthz.
type staticConflict struct {
	url     string // lease.advertise-url
	dial    dialFunc
	selfID  string // this run's node ID
	store   *engine.Store
	log     *slog.Logger
	problem atomic.Pointer[string]
}

// Problem is the conflict found, "" if none.
func (c *staticConflict) Problem() string {
	if p := c.problem.Load(); p != nil {
		return *p
	}
	return ""
}

// Run checks now and every staticCheckInterval until ctx is done.
func (c *staticConflict) Run(ctx context.Context) error {
	conn, err := c.dial(c.url)
	if err != nil {
		return fmt.Errorf("lease.advertise-url: %w", err)
	}
	defer conn.Close()
	admin := adminv1.NewAdminServiceClient(conn)

	// Every so often, check whether another node at the URL claims to be the primary.
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		node, err := admin.GetNode(cctx, &adminv1.GetNodeRequest{})
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			// Unreachable: nothing to compare with (often the URL is
			// this node's, not reachable from itself by that name).
		case node.GetNodeId() != c.selfID && node.GetRole() == adminv1.Role_ROLE_PRIMARY:
			msg := fmt.Sprintf("two nodes claim to be the static primary: this one and %s at %s (lease.advertise-url). "+
				"With lease.type static exactly one node may have lease.candidate: true; set it to false on the others and restart them. "+
				"This node refuses writes meanwhile", node.GetHostname(), c.url)
			if c.Problem() == "" {
				c.log.Error("static lease conflict: this node stops taking writes", "other_primary", node.GetHostname(), logkey.URL, c.url,
					"fix", "set lease.candidate: false on every node but the primary")
			}
			c.problem.Store(&msg)
			c.store.SetRole(pagewire.RoleReplica, pagewire.ReadOnlyError{Primary: node.GetHostname(), AdvertiseURL: c.url}, 1)
		}

		// Check again after staticCheckInterval.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(staticCheckInterval):
		}
	}
}
