//go:build integration

package replicator

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/engine"
	"github.com/pagewire/pagewire/fusemount"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
	"github.com/pagewire/pagewire/server"
)

// mountStore serves a new store on a FUSE mount and returns the store,
// the mount and its mount point.
func mountStore(t *testing.T) (*engine.Store, *fusemount.Mount, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("FUSE mounts need root here")
	}
	log := slog.New(slog.DiscardHandler)
	scfg := engine.DefaultStoreConfig()
	scfg.Dir, scfg.Logger = t.TempDir(), log
	store, err := engine.OpenStore(scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	store.SetRole(pagewire.RolePrimary, pagewire.ReadOnlyError{}, 1)
	cfg := server.DefaultConfig()
	cfg.Store, cfg.Logger, cfg.Node = store, log, server.NodeInfo{Hostname: "node1"}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Run(ctx) }()

	dir := filepath.Join(t.TempDir(), "mnt")
	mcfg := fusemount.DefaultConfig()
	mcfg.Dir, mcfg.Logger = dir, log
	mcfg.Storage = storagev1.NewStorageServiceClient(srv.Conn())
	mnt, err := fusemount.New(mcfg)
	if err != nil {
		t.Fatal(err)
	}
	mounted := make(chan error, 1)
	go func() { mounted <- mnt.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-mounted; <-served })
	select {
	case <-mnt.Ready():
	case err := <-mounted:
		t.Fatalf("mount: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the mount did not become ready")
	}
	return store, mnt, dir
}

// applyWorkerEnv makes the test binary serve the apply worker protocol
// (TestApplyWorkerProcess), as `pagewire apply-worker` does: a process must
// never wait on a FUSE mount it serves itself.
const applyWorkerEnv = "PAGEWIRE_TEST_APPLY_WORKER"

// TestApplyWorkerProcess is the apply worker child of startApplyWorker; it
// does nothing in a normal run.
func TestApplyWorkerProcess(t *testing.T) {
	if os.Getenv(applyWorkerEnv) == "" {
		t.Skip("the apply worker child of startApplyWorker")
	}
	if err := ServeApply(os.Stdin, os.Stdout, slog.New(slog.DiscardHandler)); err != nil {
		os.Exit(1)
	}
	os.Exit(0)
}

// startApplyWorker starts the test binary as the node's apply worker,
// trusted by mnt, and returns its client.
func startApplyWorker(t *testing.T, mnt *fusemount.Mount) *ApplyClient {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestApplyWorkerProcess$")
	cmd.Env = append(os.Environ(), applyWorkerEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	mnt.Trust(cmd.Process.Pid)
	c := NewApplyClient(stdin, stdout, nil)
	t.Cleanup(func() {
		c.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return c
}

// A transaction applied on a replica that does not lead to the primary's
// checksum is refused by the storage before the writer publishes it: a
// real SQLite reader, already reading or opened after, never sees it, and
// the copy is marked for a re-seed. The same pages with the right checksum
// are then seen.
func TestApply_ChecksumMismatchIsNeverVisible(t *testing.T) {
	needPython(t)
	store, mnt, mntDir := mountStore(t)
	worker := startApplyWorker(t, mnt)
	src := newSourceDB(t, t.TempDir(), 4096, "CREATE TABLE t(x); INSERT INTO t VALUES(1);")
	f, err := os.Open(src.path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = store.Import("app.db", f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(mntDir, "app.db")
	rp := startPy(t)
	rp.open("before", path)
	if n := rp.queryInt("before", "SELECT count(*) FROM t"); n != 1 {
		t.Fatalf("rows before=%d, want 1", n)
	}

	// The primary's next transaction, announced with another checksum.
	txn := src.exec("INSERT INTO t VALUES(2);")
	pos, _ := store.Position("app.db")
	ptxn := pagewire.Txn{TXID: pos.TXID + 1, PreChecksum: pos.Checksum, PostChecksum: pos.Checksum ^ 0x5a, PageSize: 4096, PageCount: txn.pageCount, Pages: txn.pages}
	done, err := store.ExpectCommit("app.db", []pagewire.Txn{ptxn})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := worker.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Apply(ctx, txn.pageCount, txn.pages, false); err == nil {
		t.Fatal("an apply with the wrong checksum succeeded")
	}
	done()
	if got, _ := store.Position("app.db"); got != pos {
		t.Fatalf("position %v after a refused apply, want %v", got, pos)
	}
	if store.Damaged("app.db") == nil {
		t.Fatal("the copy is not marked for a re-seed")
	}
	rp.open("after", path)
	for _, conn := range []string{"before", "after"} {
		if n := rp.queryInt(conn, "SELECT count(*) FROM t"); n != 1 {
			t.Fatalf("%s: rows=%d after a refused apply, want 1", conn, n)
		}
		rp.integrity(conn)
	}

	// The same pages announced with the checksum they lead to are seen.
	ptxn.PostChecksum, err = store.ChecksumPages("app.db", pos, pos.Checksum, txn.pages, txn.pageCount)
	if err != nil {
		t.Fatal(err)
	}
	if done, err = store.ExpectCommit("app.db", []pagewire.Txn{ptxn}); err != nil {
		t.Fatal(err)
	}
	if err := w.Apply(ctx, txn.pageCount, txn.pages, false); err != nil {
		t.Fatalf("apply with the right checksum: %v", err)
	}
	done()
	if got, _ := store.Position("app.db"); got != (pagewire.Pos{TXID: ptxn.TXID, Checksum: ptxn.PostChecksum}) {
		t.Fatalf("position %v, want %d/%016x", got, ptxn.TXID, ptxn.PostChecksum)
	}
	for _, conn := range []string{"before", "after"} {
		if n := rp.queryInt(conn, "SELECT count(*) FROM t"); n != 2 {
			t.Fatalf("%s: rows=%d after the right apply, want 2", conn, n)
		}
	}
}
