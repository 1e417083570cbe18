package server_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pagewire/pagewire"
	client "github.com/pagewire/pagewire/clients/go"
	"github.com/pagewire/pagewire/server"
)

// The primary's side of replication over a real gRPC connection: where a
// replica starts, depending on the position it claims.
func TestReplicationService_StreamStarts(t *testing.T) {
	conn, _, store := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := store.Create("app.db", false); err != nil {
		t.Fatal(err)
	}
	up := client.NewUpstream(conn)
	pos, _ := store.Position("app.db")

	t.Run("unknown database", func(t *testing.T) {
		s, err := up.StreamTransactions(ctx, "nosuch.db", "r1", pagewire.Pos{})
		if err == nil {
			_, err = s.Recv()
		}
		if !errors.Is(err, pagewire.ErrNotFound) {
			t.Fatalf("err=%v, want ErrNotFound", err)
		}
	})
	for _, tc := range []struct {
		name     string
		have     pagewire.Pos
		diverged bool
	}{
		{"no copy", pagewire.Pos{}, false},
		{"claims a future TXID", pagewire.Pos{TXID: pos.TXID + 5, Checksum: 1}, true},
		{"same TXID, other checksum", pagewire.Pos{TXID: pos.TXID, Checksum: pos.Checksum ^ 1}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := up.StreamTransactions(ctx, "app.db", "r1", tc.have)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if ev.Snapshot == nil || ev.Snapshot.Pos != pos || ev.Snapshot.Diverged != tc.diverged {
				t.Fatalf("first event %+v, want a snapshot at %v (diverged=%v)", ev.Snapshot, pos, tc.diverged)
			}
			pages, err := s.Recv()
			if err != nil || len(pages.SnapshotPages) != 1 {
				t.Fatalf("snapshot pages %v, err %v", pages.SnapshotPages, err)
			}
			if end, err := s.Recv(); err != nil || !end.SnapshotEnd {
				t.Fatalf("want the snapshot's end, got %+v, %v", end, err)
			}
		})
	}
	t.Run("up to date, then live", func(t *testing.T) {
		s, err := up.StreamTransactions(ctx, "app.db", "r1", pos)
		if err != nil {
			t.Fatal(err)
		}
		// A commit on the primary arrives as the next transaction.
		go commitOnePage(t, store)
		for {
			ev, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if ev.Heartbeat {
				continue
			}
			if ev.Txn == nil || ev.Txn.TXID != pos.TXID+1 || ev.Txn.PreChecksum != pos.Checksum {
				t.Fatalf("got %+v, want transaction %d after %v", ev, pos.TXID+1, pos)
			}
			if now, _ := store.Position("app.db"); ev.Txn.PostChecksum != now.Checksum {
				t.Fatalf("post checksum %016x, store at %v", ev.Txn.PostChecksum, now)
			}
			return
		}
	})
	t.Run("a replica cannot stream from a replica", func(t *testing.T) {
		store.SetRole(pagewire.RoleReplica, pagewire.ReadOnlyError{Primary: "node9", AdvertiseURL: "http://node9:20202"}, 1)
		defer store.SetRole(pagewire.RolePrimary, pagewire.ReadOnlyError{}, 1)
		w, err := up.WatchDatabases(ctx, "r1")
		if err == nil {
			_, err = w.Recv()
		}
		var ro *pagewire.ReadOnlyError
		if !errors.As(err, &ro) || ro.Primary != "node9" {
			t.Fatalf("err=%v, want a ReadOnlyError naming node9", err)
		}
	})
}

// commitOnePage commits one transaction on the primary.
func commitOnePage(t *testing.T, store *server.Store) {
	if err := server.CommitTestTransaction(store, "app.db"); err != nil {
		t.Error(err)
	}
}
