package faultfs

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// mountT mounts a new backing folder; it skips where FUSE cannot be
// mounted directly (not root, no /dev/fuse).
func mountT(t *testing.T) (*FS, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("faultfs mounts with mount(2): needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	dir := t.TempDir()
	backing, mnt := filepath.Join(dir, "backing"), filepath.Join(dir, "mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := Mount(backing, mnt)
	if errors.Is(err, syscall.EPERM) || err != nil && strings.Contains(err.Error(), "operation not permitted") {
		t.Skipf("this machine does not let root mount FUSE: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	})
	return f, mnt
}

func cut(t *testing.T, f *FS) Report {
	t.Helper()
	rep, err := f.PowerCut()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("power cut: %s", rep)
	return rep
}

func write(t *testing.T, path, data string, sync bool) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.WriteString(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := fh.Sync(); err != nil {
			t.Fatal(err)
		}
	}
}

func writeAt(t *testing.T, path string, off int64, data string, sync bool) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.WriteAt([]byte(data), off); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := fh.Sync(); err != nil {
			t.Fatal(err)
		}
	}
}

func syncDir(t *testing.T, path string) {
	t.Helper()
	d, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

// tree lists every file of root with its content, and every folder with a
// trailing slash.
func tree(t *testing.T, root string) string {
	t.Helper()
	var out []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if fi.IsDir() {
			out = append(out, rel+"/")
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s=%q", rel, b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func wantTree(t *testing.T, f *FS, want string) {
	t.Helper()
	if got := tree(t, f.Mountpoint()); got != want {
		t.Errorf("mount after the cut:\n got %s\nwant %s", got, want)
	}
	if got := tree(t, f.Backing()); got != want {
		t.Errorf("backing folder after the cut:\n got %s\nwant %s", got, want)
	}
}

func TestNewFileWithoutSyncIsGone(t *testing.T) {
	f, mnt := mountT(t)
	write(t, filepath.Join(mnt, "a"), "hello", false)
	if got := tree(t, mnt); got != `a="hello"` {
		t.Fatalf("before the cut the mount reads %s", got)
	}
	cut(t, f)
	wantTree(t, f, "")
}

func TestFileSyncedButNotItsFolderIsGone(t *testing.T) {
	f, mnt := mountT(t)
	write(t, filepath.Join(mnt, "a"), "hello", true)
	cut(t, f)
	wantTree(t, f, "")
}

func TestFolderSyncedButNotTheFileIsEmpty(t *testing.T) {
	f, mnt := mountT(t)
	write(t, filepath.Join(mnt, "a"), "hello", false)
	syncDir(t, mnt)
	cut(t, f)
	wantTree(t, f, `a=""`)
}

func TestSyncedFileAndFolderSurvive(t *testing.T) {
	f, mnt := mountT(t)
	p := filepath.Join(mnt, "a")
	write(t, p, "hello world", true)
	syncDir(t, mnt)
	cut(t, f)
	wantTree(t, f, `a="hello world"`)

	// Overwrite a part and append, without fsync: both undone.
	writeAt(t, p, 6, "WORLD and more", false)
	rep := cut(t, f)
	wantTree(t, f, `a="hello world"`)
	if rep.FilesReverted != 1 {
		t.Errorf("report %+v, want 1 file reverted", rep)
	}

	// The same with an fsync: kept.
	writeAt(t, p, 6, "WORLD and more", true)
	cut(t, f)
	wantTree(t, f, `a="hello WORLD and more"`)
}

func TestUnsyncedTruncateIsUndone(t *testing.T) {
	f, mnt := mountT(t)
	p := filepath.Join(mnt, "a")
	big := strings.Repeat("0123456789", 2000) // 20,000 bytes: several pages
	write(t, p, big, true)
	syncDir(t, mnt)

	if err := os.Truncate(p, 5000); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 30000); err != nil { // grows with zeros
		t.Fatal(err)
	}
	writeAt(t, p, 29000, "tail", false)
	cut(t, f)
	if b, err := os.ReadFile(p); err != nil || string(b) != big {
		t.Fatalf("after the cut %d bytes (err %v), want the 20,000 synced", len(b), err)
	}

	// O_TRUNC on open is a truncation too.
	write(t, p, "short", false)
	cut(t, f)
	if b, _ := os.ReadFile(p); string(b) != big {
		t.Fatalf("after an unsynced O_TRUNC rewrite and a cut: %d bytes, want the 20,000 synced", len(b))
	}

	// A synced truncation stays.
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := fh.Truncate(7); err != nil {
		t.Fatal(err)
	}
	if err := fh.Sync(); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	cut(t, f)
	wantTree(t, f, `a="0123456"`)
}

func TestUnsyncedRenameIsUndone(t *testing.T) {
	f, mnt := mountT(t)
	write(t, filepath.Join(mnt, "old"), "data", true)
	write(t, filepath.Join(mnt, "target"), "durable target", true)
	syncDir(t, mnt)

	// A rename over an existing file, not made durable: both back.
	if err := os.Rename(filepath.Join(mnt, "old"), filepath.Join(mnt, "target")); err != nil {
		t.Fatal(err)
	}
	if got := tree(t, mnt); got != `target="data"` {
		t.Fatalf("before the cut: %s", got)
	}
	cut(t, f)
	wantTree(t, f, `old="data" target="durable target"`)

	// The same made durable by an fsync of the folder.
	if err := os.Rename(filepath.Join(mnt, "old"), filepath.Join(mnt, "target")); err != nil {
		t.Fatal(err)
	}
	syncDir(t, mnt)
	cut(t, f)
	wantTree(t, f, `target="data"`)
}

// TestWriteTempThenRename is the atomic-replace idiom: write a temporary
// file, fsync it, rename it over the real one, fsync the folder. Each step
// cut short leaves the old or the new content, never a mix or nothing.
func TestWriteTempThenRename(t *testing.T) {
	f, mnt := mountT(t)
	p, tmp := filepath.Join(mnt, "meta"), filepath.Join(mnt, ".meta.tmp")
	write(t, p, "v1", true)
	syncDir(t, mnt)

	write(t, tmp, "v2", false)
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	cut(t, f) // nothing synced: v1
	wantTree(t, f, `meta="v1"`)

	write(t, tmp, "v2", false)
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	syncDir(t, mnt)
	cut(t, f) // the rename is durable, the content was never synced: empty
	wantTree(t, f, `meta=""`)

	write(t, tmp, "v3", true)
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	syncDir(t, mnt)
	cut(t, f)
	wantTree(t, f, `meta="v3"`)
}

func TestUnsyncedUnlinkIsUndone(t *testing.T) {
	f, mnt := mountT(t)
	p := filepath.Join(mnt, "a")
	write(t, p, "keep me", true)
	syncDir(t, mnt)
	// Write more without fsync, then unlink: the synced content is back.
	writeAt(t, p, 0, "CHANGED", false)
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	cut(t, f)
	wantTree(t, f, `a="keep me"`)

	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	syncDir(t, mnt)
	cut(t, f)
	wantTree(t, f, "")
}

func TestNewFolders(t *testing.T) {
	f, mnt := mountT(t)
	sub := filepath.Join(mnt, "dbs", "x")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(sub, "database"), "pages", true)
	syncDir(t, sub)
	syncDir(t, filepath.Join(mnt, "dbs"))
	cut(t, f) // the mount's root was never synced: dbs is gone
	wantTree(t, f, "")

	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(sub, "database"), "pages", true)
	syncDir(t, sub)
	syncDir(t, filepath.Join(mnt, "dbs"))
	syncDir(t, mnt)
	cut(t, f)
	wantTree(t, f, `dbs/ dbs/x/ dbs/x/database="pages"`)

	// A durable empty folder removed without a sync of its parent is back.
	if err := os.Mkdir(filepath.Join(mnt, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	syncDir(t, mnt)
	if err := os.Remove(filepath.Join(mnt, "empty")); err != nil {
		t.Fatal(err)
	}
	cut(t, f)
	wantTree(t, f, `dbs/ dbs/x/ dbs/x/database="pages" empty/`)
}

// TestFolderRenamedIntoPlace is the engine's restore: fill a temporary
// folder, rename it to its name, sync the parent.
func TestFolderRenamedIntoPlace(t *testing.T) {
	f, mnt := mountT(t)
	dbs := filepath.Join(mnt, "dbs")
	if err := os.Mkdir(dbs, 0o755); err != nil {
		t.Fatal(err)
	}
	syncDir(t, mnt)
	tmp, err := os.MkdirTemp(dbs, ".restore-*")
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(tmp, "database"), "restored", true)
	write(t, filepath.Join(tmp, "meta"), "m", true)
	// The temporary folder itself is never synced; only the parent after
	// the rename.
	if err := os.Rename(tmp, filepath.Join(dbs, "x")); err != nil {
		t.Fatal(err)
	}
	syncDir(t, dbs)
	cut(t, f)
	// The folder's own entries were never made durable: a real file system
	// may lose them, and so does the model.
	wantTree(t, f, `dbs/ dbs/x/`)

	tmp, err = os.MkdirTemp(dbs, ".restore-*")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dbs, "x")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(tmp, "database"), "restored", true)
	syncDir(t, tmp)
	if err := os.Rename(tmp, filepath.Join(dbs, "x")); err != nil {
		t.Fatal(err)
	}
	syncDir(t, dbs)
	cut(t, f)
	wantTree(t, f, `dbs/ dbs/x/ dbs/x/database="restored"`)
}

func TestSyncAll(t *testing.T) {
	f, mnt := mountT(t)
	write(t, filepath.Join(mnt, "a"), "old", true)
	write(t, filepath.Join(mnt, "gone"), "x", false)
	if err := os.Mkdir(filepath.Join(mnt, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	syncDir(t, mnt)
	if err := os.Remove(filepath.Join(mnt, "gone")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(mnt, "a"), "new", false)
	write(t, filepath.Join(mnt, "d", "b"), "b", false)
	if err := f.SyncAll(); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(mnt, "a"), "after", false)
	cut(t, f)
	wantTree(t, f, `a="new" d/ d/b="b"`)
	if entries, err := os.ReadDir(filepath.Join(f.Backing()+".faultfs", "grave")); err != nil || len(entries) != 0 {
		t.Errorf("grave after SyncAll and a cut: %v, %v; want empty", entries, err)
	}
}

// TestFsyncInterruptedByCut: with a slow fsync, a power cut that begins
// during one leaves the file as it was before it; an fsync that finished
// is kept.
func TestFsyncInterruptedByCut(t *testing.T) {
	f, mnt := mountT(t)
	p := filepath.Join(mnt, "a")
	write(t, p, "before", true)
	syncDir(t, mnt)
	f.SetFsyncDelay(20 * time.Millisecond)
	write(t, p, "synced slowly", true) // finished: durable
	f.SetFsyncDelay(2 * time.Second)
	fh, err := os.OpenFile(p, os.O_RDWR|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteString("in flight"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		err := fh.Sync()
		fh.Close()
		done <- err
	}()
	time.Sleep(200 * time.Millisecond) // the fsync is sleeping in the mount
	cut(t, f)
	if err := <-done; err == nil {
		t.Error("the fsync a power cut interrupted succeeded; want an error")
	}
	wantTree(t, f, `a="synced slowly"`)
}

// TestFreeze: after Freeze nothing changes any more, and what was not
// durable before it is dropped by the cut.
func TestFreeze(t *testing.T) {
	f, mnt := mountT(t)
	p := filepath.Join(mnt, "a")
	write(t, p, "durable", true)
	syncDir(t, mnt)
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.WriteAt([]byte("DUR"), 0); err != nil {
		t.Fatal(err)
	}
	f.Freeze()
	if _, err := fh.WriteAt([]byte("x"), 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("write after Freeze: %v, want EIO", err)
	}
	if err := fh.Sync(); !errors.Is(err, syscall.EIO) {
		t.Errorf("fsync after Freeze: %v, want EIO", err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "b"), nil, 0o644); !errors.Is(err, syscall.EIO) {
		t.Errorf("create after Freeze: %v, want EIO", err)
	}
	if err := os.Remove(p); !errors.Is(err, syscall.EIO) {
		t.Errorf("unlink after Freeze: %v, want EIO", err)
	}
	fh.Close()
	cut(t, f)
	wantTree(t, f, `a="durable"`)
	// The new mount works.
	write(t, p, "again", true)
	wantTree(t, f, `a="again"`)
}

func TestUnmountKeepsEverything(t *testing.T) {
	f, mnt := mountT(t)
	write(t, filepath.Join(mnt, "a"), "unsynced", false)
	if err := f.Unmount(); err != nil {
		t.Fatal(err)
	}
	if got := tree(t, f.Backing()); got != `a="unsynced"` {
		t.Fatalf("backing after an orderly unmount: %s", got)
	}
	if _, err := f.PowerCut(); err == nil {
		t.Fatal("PowerCut after Unmount succeeded; want an error")
	}
	if _, err := os.Stat(f.Backing() + ".faultfs"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("private folder left behind: %v", err)
	}
}

func TestRefusedOperations(t *testing.T) {
	f, mnt := mountT(t)
	p := filepath.Join(mnt, "a")
	write(t, p, "x", true)
	if err := os.Link(p, filepath.Join(mnt, "b")); !errors.Is(err, syscall.ENOTSUP) {
		t.Errorf("link: %v, want ENOTSUP", err)
	}
	if err := os.Rename(p, filepath.Join(mnt, "a")); err != nil {
		t.Errorf("rename onto itself: %v", err)
	}
	if err := os.Mkdir(filepath.Join(mnt, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(mnt, "d", "f"), "", false)
	if err := os.Remove(filepath.Join(mnt, "d")); !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		t.Errorf("rmdir of a full folder: %v, want ENOTEMPTY", err)
	}
	// (os.Rename refuses a folder as the target itself; ask the mount.)
	if err := syscall.Rename(p, filepath.Join(mnt, "d")); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("rename a file over a folder: %v, want EISDIR", err)
	}
	cut(t, f)
	wantTree(t, f, "")
}

func TestMountErrors(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Mount(file, dir); err == nil {
		t.Error("Mount of a file as the backing folder succeeded")
	}
	if _, err := Mount(filepath.Join(dir, "missing"), dir); err == nil {
		t.Error("Mount of a missing backing folder succeeded")
	}
}

// TestParallelWriters writes many files at once (run it with -race) and
// syncs half of them; after the cut exactly those hold their data.
func TestParallelWriters(t *testing.T) {
	f, mnt := mountT(t)
	const n = 16
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := filepath.Join(mnt, fmt.Sprintf("f%02d", i))
			fh, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				t.Error(err)
				return
			}
			defer fh.Close()
			buf := bytes.Repeat([]byte{byte('a' + i)}, 3000)
			for j := range 20 {
				if _, err := fh.WriteAt(buf, int64(j*len(buf))); err != nil {
					t.Error(err)
					return
				}
			}
			if i%2 == 0 {
				if err := fh.Sync(); err != nil {
					t.Error(err)
				}
			}
			// More, never synced.
			if _, err := fh.WriteAt([]byte("junk"), 7); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	syncDir(t, mnt)
	cut(t, f)
	for i := range n {
		b, err := os.ReadFile(filepath.Join(mnt, fmt.Sprintf("f%02d", i)))
		if err != nil {
			t.Fatal(err)
		}
		want := []byte{}
		if i%2 == 0 {
			want = bytes.Repeat([]byte{byte('a' + i)}, 60000)
		}
		if !bytes.Equal(b, want) {
			t.Errorf("f%02d: %d bytes after the cut, want %d", i, len(b), len(want))
		}
	}
}

// refFile and refDir are the test's own model of what a power cut keeps:
// the live and the durable content of each file, and the live and the
// durable entries of each folder.
type refFile struct{ live, durable []byte }

type refDir struct {
	path          string // relative to the mount
	live, durable map[string]*refFile
}

// TestRandomOpsAgainstModel runs random writes, truncations, renames,
// unlinks and fsyncs of files and folders on the mount, and checks each
// power cut's result against the test's own model of it.
func TestRandomOpsAgainstModel(t *testing.T) {
	// Seeds that found bugs, then one from the clock.
	for _, seed := range []uint64{1796322649276043926, uint64(time.Now().UnixNano())} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { randomOps(t, seed) })
	}
}

func randomOps(t *testing.T, seed uint64) {
	f, mnt := mountT(t)
	rnd := rand.New(rand.NewPCG(seed, 1))
	if err := os.Mkdir(filepath.Join(mnt, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	syncDir(t, mnt)
	dirs := []*refDir{
		{path: "", live: map[string]*refFile{}, durable: map[string]*refFile{}},
		{path: "d", live: map[string]*refFile{}, durable: map[string]*refFile{}},
	}
	names := []string{"a", "b", "c", "wal", "meta"}
	pick := func(d *refDir) (string, *refFile) {
		var ns []string
		for n := range d.live {
			ns = append(ns, n)
		}
		if len(ns) == 0 {
			return "", nil
		}
		sort.Strings(ns)
		n := ns[rnd.IntN(len(ns))]
		return n, d.live[n]
	}
	path := func(d *refDir, name string) string { return filepath.Join(mnt, d.path, name) }
	for round := range 6 {
		for range 300 {
			d := dirs[rnd.IntN(len(dirs))]
			switch op := rnd.IntN(8); op {
			case 0: // create
				name := names[rnd.IntN(len(names))]
				if d.live[name] != nil {
					continue
				}
				fh, err := os.OpenFile(path(d, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
				if err != nil {
					t.Fatal(err)
				}
				fh.Close()
				d.live[name] = &refFile{live: []byte{}, durable: []byte{}}
			case 1, 2: // write
				name, rf := pick(d)
				if rf == nil {
					continue
				}
				off := rnd.IntN(len(rf.live) + 5000)
				data := make([]byte, 1+rnd.IntN(9000))
				for i := range data {
					data[i] = byte('A' + rnd.IntN(26))
				}
				writeAt(t, path(d, name), int64(off), string(data), false)
				if end := off + len(data); end > len(rf.live) {
					rf.live = append(rf.live, make([]byte, end-len(rf.live))...)
				}
				copy(rf.live[off:], data)
			case 3: // truncate
				name, rf := pick(d)
				if rf == nil {
					continue
				}
				size := rnd.IntN(len(rf.live) + 5000)
				if err := os.Truncate(path(d, name), int64(size)); err != nil {
					t.Fatal(err)
				}
				if size < len(rf.live) {
					rf.live = rf.live[:size]
				} else {
					rf.live = append(rf.live, make([]byte, size-len(rf.live))...)
				}
			case 4: // fsync a file
				name, rf := pick(d)
				if rf == nil {
					continue
				}
				fh, err := os.OpenFile(path(d, name), os.O_RDONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				if err := fh.Sync(); err != nil {
					t.Fatal(err)
				}
				fh.Close()
				rf.durable = bytes.Clone(rf.live)
			case 5: // rename, maybe over another file, maybe to the other folder
				name, rf := pick(d)
				if rf == nil {
					continue
				}
				to := dirs[rnd.IntN(len(dirs))]
				newName := names[rnd.IntN(len(names))]
				if err := os.Rename(path(d, name), path(to, newName)); err != nil {
					t.Fatal(err)
				}
				delete(d.live, name)
				to.live[newName] = rf
			case 6: // unlink
				name, rf := pick(d)
				if rf == nil {
					continue
				}
				if err := os.Remove(path(d, name)); err != nil {
					t.Fatal(err)
				}
				delete(d.live, name)
			case 7: // fsync a folder
				syncDir(t, filepath.Join(mnt, d.path))
				d.durable = maps.Clone(d.live)
			}
		}
		cut(t, f)
		// What the model keeps: each folder's durable names, each with its
		// file's durable content; a file durable under two names is two
		// files from now on.
		var want []string
		for _, d := range dirs {
			if d.path != "" {
				want = append(want, d.path+"/")
			}
			d.live = map[string]*refFile{}
			for name, rf := range d.durable {
				want = append(want, fmt.Sprintf("%s=%q", filepath.Join(d.path, name), rf.durable))
				d.live[name] = &refFile{live: bytes.Clone(rf.durable), durable: bytes.Clone(rf.durable)}
			}
			d.durable = maps.Clone(d.live)
		}
		sort.Strings(want)
		if got := tree(t, mnt); got != strings.Join(want, " ") {
			t.Fatalf("round %d (seed %d): after the cut\n got %.2000s\nwant %.2000s", round, seed, got, strings.Join(want, " "))
		}
	}
}
