package faultfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// FS is a backing directory served at a mount point, with a power cut.
type FS struct {
	backing, mountpoint, private string

	mu     sync.Mutex // guards server and st
	server *fuse.Server
	st     *state
	delay  time.Duration // SetFsyncDelay's, kept across remounts
}

// Mount serves the folder backing at mountpoint (both must exist). It
// keeps its own files in backing+".faultfs", which must be on the same
// file system. Everything in backing when it mounts is durable. Mounting
// needs root (it calls mount(2) itself, not fusermount).
func Mount(backing, mountpoint string) (*FS, error) {
	backing, err := filepath.Abs(backing)
	if err != nil {
		return nil, err
	}
	mountpoint, err = filepath.Abs(mountpoint)
	if err != nil {
		return nil, err
	}
	f := &FS{backing: backing, mountpoint: mountpoint, private: backing + ".faultfs"}
	if err := os.MkdirAll(f.private, 0o755); err != nil {
		return nil, err
	}
	var a, b syscall.Stat_t
	if err := syscall.Stat(backing, &a); err != nil {
		return nil, fmt.Errorf("faultfs: the backing folder: %w", err)
	}
	if err := syscall.Stat(f.private, &b); err != nil {
		return nil, err
	}
	if a.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return nil, fmt.Errorf("faultfs: %s is not a folder", backing)
	}
	if a.Dev != b.Dev {
		return nil, fmt.Errorf("faultfs: %s and %s are on different file systems; choose a backing folder whose parent is on the same one", backing, f.private)
	}
	if err := f.mount(); err != nil {
		return nil, err
	}
	return f, nil
}

// Backing is the backing folder; Mountpoint where it is served.
func (f *FS) Backing() string    { return f.backing }
func (f *FS) Mountpoint() string { return f.mountpoint }

func (f *FS) mount() error {
	grave := filepath.Join(f.private, "grave")
	if err := os.RemoveAll(grave); err != nil {
		return err
	}
	if err := os.Mkdir(grave, 0o755); err != nil {
		return err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(f.backing, &st); err != nil {
		return err
	}
	s := newState(f.backing, grave)
	root := &fs.LoopbackRoot{Path: f.backing, Dev: uint64(st.Dev)}
	rn := &node{LoopbackNode: &fs.LoopbackNode{RootData: root}, st: s}
	root.RootNode = rn
	// No kernel caching of names or attributes: every change is seen by
	// the model, and every lookup sees the backing folder as it is.
	var zero time.Duration
	server, err := fs.Mount(f.mountpoint, rn, &fs.Options{
		EntryTimeout: &zero, AttrTimeout: &zero, NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{DirectMountStrict: true, FsName: "faultfs", Name: "faultfs"},
	})
	if err != nil {
		return fmt.Errorf("faultfs: mount %s: %w", f.mountpoint, err)
	}
	f.mu.Lock()
	f.server, f.st = server, s
	s.fsyncDelay.Store(int64(f.delay))
	f.mu.Unlock()
	return nil
}

// unmount stops serving; a mount still in use is detached. It waits until
// no request is being served.
func (f *FS) unmount() error {
	f.mu.Lock()
	server := f.server
	f.server = nil
	f.mu.Unlock()
	if server == nil {
		return errors.New("faultfs: not mounted")
	}
	if err := server.Unmount(); err != nil {
		if err := syscall.Unmount(f.mountpoint, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("faultfs: unmount %s: %w", f.mountpoint, err)
		}
	}
	done := make(chan struct{})
	go func() {
		server.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-time.After(time.Minute):
		return fmt.Errorf("faultfs: %s was detached but is still in use after a minute; stop the processes using it", f.mountpoint)
	}
}

// Freeze is the instant of a power cut: from now on every change through
// the mount fails with EIO and counts for nothing, and an fsync still in
// progress (see SetFsyncDelay) fails. Kill the processes using the mount,
// then call PowerCut. (PowerCut freezes too, at its start.)
func (f *FS) Freeze() {
	f.mu.Lock()
	s := f.st
	f.mu.Unlock()
	s.mu.Lock()
	s.cut = true
	s.mu.Unlock()
}

// PowerCut simulates power loss: it unmounts (stop every process using the
// mount first: what they do after it is lost), rebuilds the backing folder
// as the model says a disk holds after power loss (see the package doc),
// and mounts it again.
func (f *FS) PowerCut() (Report, error) {
	f.Freeze()
	if err := f.unmount(); err != nil {
		return Report{}, err
	}
	scratch := filepath.Join(f.private, "scratch")
	if err := os.RemoveAll(scratch); err != nil {
		return Report{}, err
	}
	if err := os.Mkdir(scratch, 0o755); err != nil {
		return Report{}, err
	}
	rep, err := f.st.materialize(scratch)
	if err != nil {
		return rep, fmt.Errorf("faultfs: power cut: %w", err)
	}
	if err := os.RemoveAll(scratch); err != nil {
		return rep, err
	}
	return rep, f.mount()
}

// SetFsyncDelay makes every fsync of a file take d (0: none), as a real
// disk's does; a power cut during it leaves the file as before the fsync
// (the fsync fails with EIO, if anyone is still waiting). It widens the
// window between a write and its durability that a power cut can hit.
func (f *FS) SetFsyncDelay(d time.Duration) {
	f.mu.Lock()
	f.delay = d
	s := f.st
	f.mu.Unlock()
	s.fsyncDelay.Store(int64(d))
}

// SyncAll makes everything written so far durable, as sync(2) does, or
// the kernel's writeback of dirty pages a while after they were written.
func (f *FS) SyncAll() error {
	f.mu.Lock()
	s := f.st
	mounted := f.server != nil
	f.mu.Unlock()
	if !mounted {
		return errors.New("faultfs: not mounted")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for ino := range s.graved {
		if err := os.RemoveAll(s.gravePath(ino)); err != nil {
			return err
		}
	}
	s.files, s.dirs, s.refs, s.graved = map[uint64]*fileRec{}, map[uint64]*dirRec{}, map[uint64]int{}, map[uint64]bool{}
	return nil
}

// Unmount is an orderly shutdown: everything written stays in the backing
// folder. The FS cannot be used after it.
func (f *FS) Unmount() error {
	if err := f.unmount(); err != nil {
		return err
	}
	return os.RemoveAll(f.private)
}

// Close unmounts if still mounted (for t.Cleanup); it leaves the backing
// folder as it is.
func (f *FS) Close() error {
	f.mu.Lock()
	mounted := f.server != nil
	f.mu.Unlock()
	if !mounted {
		return nil
	}
	return f.Unmount()
}
