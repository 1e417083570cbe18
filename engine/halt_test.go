package engine

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/pagewire/pagewire"
)

// haltReplicaStore is a replica's store whose "app.db" a client holds the
// halt lock on, with forward as the trip to the primary.
func haltReplicaStore(t *testing.T, dir string, forward func(pagewire.Txn) error) (*Store, *walBuilder) {
	t.Helper()
	s := openTestStore(t, dir)
	if _, err := s.Create("app.db", App); err != nil {
		t.Fatal(err)
	}
	w := newWALBuilder(t, s, "app.db", 11)
	s.SetRole(pagewire.RoleReplica, pagewire.ReadOnlyError{Primary: "node1", AdvertiseURL: "http://node1:20202"}, 1)
	d, err := s.db("app.db")
	if err != nil {
		t.Fatal(err)
	}
	d.halt.Store(&localHalt{lock: pagewire.HaltLock{ID: "h1", Expires: time.Now().Add(time.Minute)}, forward: forward})
	return s, w
}

func TestStore_HaltForwardsEachCommitFirst(t *testing.T) {
	var got []pagewire.Txn
	s, w := haltReplicaStore(t, t.TempDir(), func(txn pagewire.Txn) error {
		got = append(got, txn)
		return nil
	})
	before, _ := s.Position("app.db")
	w.frame(2, testPage(2), 0)
	if txid := w.frame(1, testPage(1), 2); txid != before.TXID+1 {
		t.Fatalf("TXID after the commit %d, want %d", txid, before.TXID+1)
	}
	after, _ := s.Position("app.db")
	if len(got) != 1 {
		t.Fatalf("%d transactions forwarded, want 1", len(got))
	}
	txn := got[0]
	if txn.TXID != after.TXID || txn.PreChecksum != before.Checksum || txn.PostChecksum != after.Checksum || txn.PageCount != 2 {
		t.Fatalf("forwarded %s pre %016x post %016x count %d; store went %s → %s", txn.TXID, txn.PreChecksum, txn.PostChecksum, txn.PageCount, before, after)
	}
	if want := checksumOf(map[uint32][]byte{1: testPage(1), 2: testPage(2)}, 2); after.Checksum != want {
		t.Fatalf("checksum %016x, want %016x", after.Checksum, want)
	}
	if len(txn.Pages) != 2 || txn.Pages[0].Pgno != 1 || txn.Pages[1].Pgno != 2 {
		t.Fatalf("forwarded pages %v", txn.Pages)
	}
}

func TestStore_HaltRefusedCommitCountsNowhere(t *testing.T) {
	dir := t.TempDir()
	refuse := errors.New("the primary said no")
	s, w := haltReplicaStore(t, dir, func(pagewire.Txn) error { return refuse })
	before, _ := s.Position("app.db")
	w.frame(2, testPage(7), 0)
	if _, err := w.tryFrame(1, testPage(8), 2); !errors.Is(err, refuse) {
		t.Fatalf("commit under a refused forward: %v, want the primary's refusal", err)
	}
	if after, _ := s.Position("app.db"); after != before {
		t.Fatalf("position moved from %s to %s", before, after)
	}
	// Not counted after a restart either: recovery stops at the undone frame.
	s.Close()
	s2 := openTestStore(t, dir)
	if after, _ := s2.Position("app.db"); after.TXID != before.TXID {
		t.Fatalf("after a restart the position is %s, want TXID %s", after, before.TXID)
	}
}

// fakeHeld is a HeldWriter that records what it is given.
type fakeHeld struct {
	mu       sync.Mutex
	applied  int
	released bool
}

func (f *fakeHeld) Apply(context.Context, uint32, []pagewire.Page, bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied++
	return nil
}

func (f *fakeHeld) Release(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.released = true
	return nil
}

func TestHalts_GrantWaitsReleaseAndExpiry(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	if _, err := s.Create("app.db", App); err != nil {
		t.Fatal(err)
	}
	s.SetRole(pagewire.RolePrimary, pagewire.ReadOnlyError{}, 3)
	var held []*fakeHeld
	h := NewHalts(s, "p", func(context.Context, string, time.Duration) (HeldWriter, error) {
		f := &fakeHeld{}
		held = append(held, f)
		return f, nil
	}, nil, slog.Default())
	ctx := context.Background()

	if _, err := h.grant(ctx, "nope.db", "r1", 3, time.Minute, time.Second, onAReplica); !errors.Is(err, pagewire.ErrNotFound) {
		t.Fatalf("unknown database: %v", err)
	}
	if _, err := h.grant(ctx, "app.db", "r1", 2, time.Minute, time.Second, onAReplica); !errors.Is(err, pagewire.ErrReadOnly) {
		t.Fatalf("older epoch: %v", err)
	}
	l1, err := h.grant(ctx, "app.db", "r1", 3, time.Minute, time.Second, onAReplica)
	if err != nil || l1.Holder != "r1" || len(held) != 1 {
		t.Fatalf("grant: %+v %v", l1, err)
	}
	// A second request waits, and is told who holds it.
	if _, err := h.grant(ctx, "app.db", "r2", 3, time.Minute, 50*time.Millisecond, onAReplica); !errors.Is(err, pagewire.ErrBusy) {
		t.Fatalf("second request: %v", err)
	}
	done := make(chan pagewire.HaltLock)
	go func() {
		l, err := h.grant(ctx, "app.db", "r2", 3, 200*time.Millisecond, 10*time.Second, onAReplica)
		if err != nil {
			t.Error(err)
		}
		done <- l
	}()
	if err := h.release("app.db", "wrong", "released"); !errors.Is(err, pagewire.ErrNotHolder) {
		t.Fatalf("release with another id: %v", err)
	}
	if err := h.release("app.db", l1.ID, "released"); err != nil {
		t.Fatal(err)
	}
	l2 := <-done
	if l2.Holder != "r2" || !held[0].released {
		t.Fatalf("second lock %+v, first writer released %v", l2, held[0].released)
	}
	// The second expires by itself and releases its writer.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := h.Held("app.db"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lock did not expire")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !held[1].released {
		t.Fatal("the expired lock's writer was not released")
	}
	if err := h.release("app.db", l2.ID, "released"); !errors.Is(err, pagewire.ErrNotFound) {
		t.Fatalf("release after expiry: %v", err)
	}
	// Demoted: grants are refused.
	s.SetRole(pagewire.RoleReplica, pagewire.ReadOnlyError{Primary: "other"}, 4)
	if _, err := h.grant(ctx, "app.db", "r1", 0, time.Minute, time.Second, onAReplica); !errors.Is(err, pagewire.ErrReadOnly) {
		t.Fatalf("grant on a replica: %v", err)
	}
}
