//go:build integration

package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/syncbuf"
)

// FuseProc is `pagewire fuse`: a mount in its own process against a
// node's storage socket.
type FuseProc struct {
	Dir  string
	Log  *syncbuf.Buffer
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// StartFuse starts `pagewire fuse` on dir against the storage socket
// sock. Cleanup stops it and detaches whatever it left mounted.
func StartFuse(t testing.TB, sock, dir string) *FuseProc {
	t.Helper()
	f := &FuseProc{Dir: dir, Log: &syncbuf.Buffer{}, done: make(chan struct{})}
	f.cmd = exec.Command(pagewireBin, "fuse", "-storage", "unix://"+sock, "-dir", dir)
	f.cmd.Stdout, f.cmd.Stderr = f.Log, f.Log
	f.cmd.WaitDelay = 10 * time.Second
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		f.err = f.cmd.Wait()
		close(f.done)
	}()
	t.Cleanup(func() {
		_ = f.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-f.done:
		case <-time.After(15 * time.Second):
			_ = f.cmd.Process.Kill()
			<-f.done
		}
		for range 10 {
			if syscall.Unmount(dir, syscall.MNT_DETACH) != nil {
				break
			}
		}
		if t.Failed() {
			t.Logf("pagewire fuse on %s:\n%s", dir, f.Log)
		}
	})
	return f
}

// Mounted reports whether the process has mounted its directory.
func (f *FuseProc) Mounted() bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	return err == nil && strings.Contains(string(b), " "+f.Dir+" ")
}

// Exited waits up to timeout for the process to exit and reports whether
// it did.
func (f *FuseProc) Exited(timeout time.Duration) bool {
	select {
	case <-f.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// preadWithin reads from f at offset 0 and returns the error, or fails
// the test if the read takes longer than limit (a hung mount).
func preadWithin(t *testing.T, f *os.File, limit time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := f.ReadAt(make([]byte, 4096), 0)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		t.Fatalf("a read of an open file on the split mount hung for %s", limit)
		return nil
	}
}

// TestSplit_MountInItsOwnProcess runs a node without a mount and
// `pagewire fuse` against its storage socket: SQLite works through it, a
// second mount is refused naming the first, and when the node is killed
// an open file fails with EIO at once; once the node is back, new
// connections work and the old file still fails.
func TestSplit_MountInItsOwnProcess(t *testing.T) {
	n := StartNode(t, NodeOptions{Args: []string{"-external-fuse"}})
	sock := filepath.Join(n.DataDir, "storage.sock")
	dir := filepath.Join(n.Dir, "split")
	f := StartFuse(t, sock, dir)
	waitFor(t, 30*time.Second, "pagewire fuse to mount", f.Mounted)
	db := filepath.Join(dir, "app.db")

	// SQLite writes and reads through the split mount.
	out, err := sqliteCLI(t, db, "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2); SELECT count(*) FROM t;")
	if err != nil || strings.TrimSpace(out) != "2" {
		t.Fatalf("sqlite3 through the split mount: %v\n%s", err, out)
	}
	if pos, err := os.ReadFile(db + "-pos"); err != nil || !strings.HasPrefix(string(pos), "0000000000000003/") {
		t.Fatalf("app.db-pos: %q, %v; want TXID 3 (the create, then the insert)", pos, err)
	}

	// A second mount of the same server is refused, naming the first.
	second := StartFuse(t, sock, filepath.Join(n.Dir, "second"))
	if !second.Exited(30 * time.Second) {
		t.Fatal("a second pagewire fuse on the same storage server is still running")
	}
	msg := strings.TrimSpace(second.Log.String())
	lines := strings.Split(msg, "\n")
	last := lines[len(lines)-1]
	if want := fmt.Sprintf("(pid %d) at %s", f.cmd.Process.Pid, dir); second.err == nil || !strings.Contains(last, "already mounted by") || !strings.Contains(last, want) {
		t.Fatalf("second mount: %v, last line %q; want it refused naming %q", second.err, last, want)
	}

	// The node dies with a file open: reads of it fail, promptly.
	file, err := os.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if err := preadWithin(t, file, 10*time.Second); err != nil {
		t.Fatalf("read before the kill: %v", err)
	}
	n.Kill()
	waitFor(t, 10*time.Second, "a read of the open file to fail", func() bool {
		return preadWithin(t, file, 10*time.Second) != nil
	})
	if err := preadWithin(t, file, 10*time.Second); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read with the node gone: %v, want EIO", err)
	}
	if _, err := sqliteCLI(t, db, "SELECT count(*) FROM t;"); err == nil {
		t.Fatal("sqlite3 worked with the node gone")
	}

	// The node is back: new connections work; the old file still fails.
	n.Start(false)
	waitFor(t, 30*time.Second, "sqlite3 through the split mount after the restart", func() bool {
		out, err := sqliteCLI(t, db, "INSERT INTO t VALUES (3); SELECT count(*) FROM t;")
		return err == nil && strings.TrimSpace(out) == "3"
	})
	if err := preadWithin(t, file, 10*time.Second); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of a file opened before the restart: %v, want EIO", err)
	}
	if !f.Mounted() || f.Exited(0) {
		t.Fatalf("pagewire fuse stopped across the node's restart")
	}
}

// TestSplit_RefusedBesideTheNodesOwnMount: a node that mounts fuse.dir
// itself holds its server's mount session, so `pagewire fuse` against its
// socket is refused naming the node's mount; and -external-fuse is refused
// on a replica, which applies through its own mount.
func TestSplit_RefusedBesideTheNodesOwnMount(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	f := StartFuse(t, filepath.Join(n.DataDir, "storage.sock"), filepath.Join(n.Dir, "split"))
	if !f.Exited(30 * time.Second) {
		t.Fatal("pagewire fuse beside the node's own mount is still running")
	}
	if want := "at " + n.MountDir + ": a storage server serves one mount at a time"; f.err == nil || !strings.Contains(f.Log.String(), want) {
		t.Fatalf("pagewire fuse: %v\n%s\nwant it refused naming the node's mount (%q)", f.err, f.Log, want)
	}

	r := StartNode(t, NodeOptions{ReplicaOf: n, Args: []string{"-external-fuse"}, NoWait: true})
	if code := r.Wait(30 * time.Second); code == 0 || !strings.Contains(r.Log.String(), "-external-fuse needs a static primary") {
		t.Fatalf("a replica with -external-fuse exited %d:\n%s", code, r.Log)
	}
}
