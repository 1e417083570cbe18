package server_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/engine"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
	"github.com/pagewire/pagewire/replicator/upstream"
	"github.com/pagewire/pagewire/wal"
)

// The primary's side of replication over a real gRPC connection: where a
// replica starts, depending on the position it claims.
func TestReplicationService_StreamStarts(t *testing.T) {
	conn, _, store := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := store.Create("app.db", engine.App); err != nil {
		t.Fatal(err)
	}
	up := upstream.New(conn)
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
func commitOnePage(t *testing.T, store *engine.Store) {
	if err := commitTestTransaction(store, "app.db"); err != nil {
		t.Error(err)
	}
}

// commitTestTransaction commits one transaction to db as SQLite would: a
// new WAL (header), then one commit frame for page 2.
func commitTestTransaction(s *engine.Store, db string) error {
	walFile, err := s.Create(db+"-wal", engine.App)
	if err != nil {
		return err
	}
	h := wal.Header{PageSize: 4096, Salt: wal.Salt{77, 78}}
	hdr := h.AppendTo(nil) // sets h.Checksum, which the frames chain on from
	enc := h.Encoder()
	if _, _, err := s.WriteAt(walFile.ID, hdr, 0, engine.App); err != nil {
		return err
	}
	page := bytes.Repeat([]byte{7}, 4096)
	fh := enc.AppendFrame(nil, 2, 2, page)[:wal.FrameHeaderSize]
	if _, _, err := s.WriteAt(walFile.ID, fh, wal.HeaderSize, engine.App); err != nil {
		return err
	}
	_, _, err = s.WriteAt(walFile.ID, page, wal.HeaderSize+wal.FrameHeaderSize, engine.App)
	return err
}

// Transactions already committed when a replica asks for them go in one
// message; the client hands them out one by one.
func TestReplicationService_CommittedTransactionsGoTogether(t *testing.T) {
	conn, _, store := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := store.Create("app.db", engine.App); err != nil {
		t.Fatal(err)
	}
	from, _ := store.Position("app.db")
	for range 5 {
		commitOnePage(t, store)
	}
	to, _ := store.Position("app.db")
	s, err := replicationv1.NewReplicationServiceClient(conn).StreamTransactions(ctx, &replicationv1.StreamTransactionsRequest{
		Name: "app.db", Hostname: "r1", Position: &replicationv1.Position{Txid: uint64(from.TXID), Checksum: from.Checksum}})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	txns := msg.GetTransactions().GetTransactions()
	if len(txns) != 5 || txns[0].GetTxid() != uint64(from.TXID)+1 || txns[4].GetTxid() != uint64(to.TXID) || txns[4].GetPostChecksum() != to.Checksum {
		t.Fatalf("first message %v, want transactions %d..%d together", msg, from.TXID+1, to.TXID)
	}

	up, err := upstream.New(conn).StreamTransactions(ctx, "app.db", "r1", from)
	if err != nil {
		t.Fatal(err)
	}
	for want := from.TXID + 1; want <= to.TXID; want++ {
		ev, err := up.Recv()
		if err != nil || ev.Txn == nil || ev.Txn.TXID != want {
			t.Fatalf("got %+v, %v; want transaction %d", ev.Txn, err, want)
		}
	}
}

// A transaction larger than a message goes a part at a time, each its own
// message with more set on all but the last; the client hands the parts
// out as they come, and they make up the transaction.
func TestReplicationService_BigTransactionGoesInParts(t *testing.T) {
	conn, _, store := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := store.Create("app.db", engine.App); err != nil {
		t.Fatal(err)
	}
	from, _ := store.Position("app.db")

	// 1,100 pages of 4 KiB: more than a message and than what the
	// transaction log holds in memory.
	const n = 1100
	walFile, err := store.Create("app.db-wal", engine.App)
	if err != nil {
		t.Fatal(err)
	}
	h := wal.Header{PageSize: 4096, Salt: wal.Salt{5, 6}}
	buf := h.AppendTo(nil)
	enc := h.Encoder()
	for pgno := uint32(2); pgno <= n+1; pgno++ {
		commit := uint32(0)
		if pgno == n+1 {
			commit = n + 1
		}
		buf = enc.AppendFrame(buf, pgno, commit, bytes.Repeat([]byte{byte(pgno)}, 4096))
	}
	if _, _, err := store.WriteAt(walFile.ID, buf, 0, engine.App); err != nil {
		t.Fatal(err)
	}
	to, _ := store.Position("app.db")
	if to.TXID != from.TXID+1 {
		t.Fatalf("the big transaction did not count: %v -> %v", from, to)
	}

	up, err := upstream.New(conn).StreamTransactions(ctx, "app.db", "r1", from)
	if err != nil {
		t.Fatal(err)
	}
	var pages []pagewire.Page
	parts := 0
	for more := true; more; {
		ev, err := up.Recv()
		if err != nil || ev.Txn == nil || ev.Txn.TXID != to.TXID || ev.Txn.PostChecksum != to.Checksum {
			t.Fatalf("part %d: %+v, %v", parts, ev.Txn, err)
		}
		parts++
		more = ev.More
		pages = append(pages, ev.Txn.Pages...)
	}
	if parts < 3 || len(pages) != n {
		t.Fatalf("%d parts of %d pages, want at least 3 of %d in all", parts, len(pages), n)
	}
	for i, p := range pages {
		if p.Pgno != uint32(i)+2 || p.Data[0] != byte(p.Pgno) {
			t.Fatalf("page %d came as %d", i+2, p.Pgno)
		}
	}
}
