package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/pagewire/pagewire"
	client "github.com/pagewire/pagewire/clients/go"
	"github.com/pagewire/pagewire/engine"
	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/leaser"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
	"github.com/pagewire/pagewire/roles"
)

// This file is what the mount command does with a Consul lease beyond
// running roles.Manager: hand off before stopping, and lease.promote.

// handoffTimeout bounds how long a stopping primary waits for another
// candidate to take the lease before it stops anyway.
const handoffTimeout = 5 * time.Second

// handOff, on a primary with a Consul lease, hands the lease to a
// caught-up candidate before the node stops, while it still serves its
// last transactions to them.
func handOff(m *roles.Manager, log *slog.Logger) {
	if m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), handoffTimeout)
	defer cancel()
	start := time.Now()
	h, err := m.Handoff(ctx, "")
	switch {
	case errors.Is(err, roles.ErrNotPrimary):
	case err != nil:
		log.Warn("stopping without a successor: no other candidate took the lease", logkey.Error, err)
	default:
		log.Info("handed the lease off before stopping", logkey.Primary, h.Hostname, "took", time.Since(start).Round(time.Millisecond))
	}
}

// promote (lease.promote) waits until this node has every database of the
// primary h, each at least where the primary was at the previous look, then
// asks h to hand the lease to this node.
func promote(ctx context.Context, dial dialFunc, h leaser.Holder, self string, store *engine.Store, log *slog.Logger) error {
	conn, err := dial(h.AdvertiseURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	admin := adminv1.NewAdminServiceClient(conn)

	// Poll until this node has reached the positions the primary had one look earlier.
	var prev map[string]pagewire.TXID // the primary's positions at the previous look
	for {
		resp, err := admin.ListDatabases(ctx, &adminv1.ListDatabasesRequest{})
		if err == nil {
			mine := storePositions(store)()
			caughtUp := prev != nil
			for db, txid := range prev {
				if mine[db] < txid {
					caughtUp = false
				}
			}
			if caughtUp {
				break
			}
			prev = map[string]pagewire.TXID{}
			for _, d := range resp.GetDatabases() {
				prev[d.GetName()] = pagewire.TXID(d.GetTxid())
			}
		}

		// Look again shortly.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}

	log.Info("lease.promote: caught up with the primary; asking it to hand the lease to this node", logkey.Primary, h.Hostname)
	// A few tries: the primary may be between lease states, or may not
	// have seen this candidate's position yet.
	for try := 1; ; try++ {
		_, err := admin.Handoff(ctx, &adminv1.HandoffRequest{Target: self})
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if try == promoteTries {
			return client.Error(err)
		}
		log.Warn("lease.promote: the primary did not hand off; asking again", logkey.Primary, h.Hostname, logkey.Error, client.Error(err))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// promoteTries is how many times lease.promote asks for a handoff.
const promoteTries = 5

// storePositions returns the TXID of each of the store's databases.
func storePositions(store *engine.Store) func() map[string]pagewire.TXID {
	return func() map[string]pagewire.TXID {
		out := map[string]pagewire.TXID{}
		for _, d := range store.Databases() {
			out[d.Name] = d.Pos.TXID
		}
		return out
	}
}
