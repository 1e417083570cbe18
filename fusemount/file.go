package fusemount

import (
	"context"
	"os"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
)

// fileNode is one file on the mount, addressed on the server by its id.
type fileNode struct {
	fs.Inode
	m        *Mount
	name     string
	id       uint64
	volatile bool // content changes on the server: no caching
	readOnly bool
	shm      bool // a -shm: mapped by SQLite
}

var (
	_ fs.NodeOpener    = (*fileNode)(nil)
	_ fs.NodeReader    = (*fileNode)(nil)
	_ fs.NodeWriter    = (*fileNode)(nil)
	_ fs.NodeFsyncer   = (*fileNode)(nil)
	_ fs.NodeGetattrer = (*fileNode)(nil)
	_ fs.NodeSetattrer = (*fileNode)(nil)
	_ fs.NodeReleaser  = (*fileNode)(nil)
)

// handle is an open file. internal marks a handle the node's own process
// opened (a replica applying transactions): its writes are the node's, not
// an app's. gen is the mount session it was opened in.
type handle struct {
	internal bool
	gen      uint64
}

// isInternal reports whether fh is a handle the node itself opened.
func isInternal(fh fs.FileHandle) bool {
	h, ok := fh.(*handle)
	return ok && h.internal
}

// callerIsNode reports whether the FUSE request comes from the node: this
// process or one it trusts (its apply worker). The kernel passes the
// calling thread's id; it is the node's if /proc/<pid>/task has it.
func (m *Mount) callerIsNode(ctx context.Context) bool {
	caller, ok := fuse.FromContext(ctx)
	if !ok || caller.Pid == 0 {
		return false
	}
	tid := strconv.FormatUint(uint64(caller.Pid), 10)
	if _, err := os.Stat("/proc/self/task/" + tid); err == nil {
		return true
	}
	m.trustMu.Lock()
	pids := append([]int(nil), m.trusted...)
	m.trustMu.Unlock()
	for _, pid := range pids {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/task/" + tid); err == nil {
			return true
		}
	}
	return false
}

func (n *fileNode) fill(fi *storagev1.FileInfo, a *fuse.Attr) {
	a.Ino = fi.GetFileId()
	a.Size = uint64(fi.GetSize())
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = 4096
	a.Nlink = 1
	a.Mode = syscall.S_IFREG | 0o644
	if fi.GetReadOnly() {
		a.Mode = syscall.S_IFREG | 0o444
	}
	if t := fi.GetModTime(); t != nil {
		a.Mtime, a.Mtimensec = uint64(t.GetSeconds()), uint32(t.GetNanos())
		a.Ctime, a.Ctimensec = a.Mtime, a.Mtimensec
		a.Atime, a.Atimensec = a.Mtime, a.Mtimensec
	}
}

func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return n.open(ctx, flags)
}

func (n *fileNode) open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	write := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	if write && n.readOnly {
		return nil, 0, syscall.EACCES
	}
	gen, errno := n.m.sess.current()
	if errno != 0 {
		return nil, 0, errno
	}
	h := &handle{internal: write && n.m.callerIsNode(ctx), gen: gen}
	if _, err := n.m.cfg.Storage.OpenFile(ctx, &storagev1.OpenFileRequest{FileId: n.id, Write: write, Internal: h.internal}); err != nil {
		errno := toErrno(err)
		if errno == syscall.EROFS {
			// A replica: the app's SQLite retries read-only and reports
			// SQLITE_READONLY on writes.
			return nil, 0, syscall.EACCES
		}
		return nil, 0, n.m.fail("open", n.name, err)
	}
	if n.volatile {
		return h, fuse.FOPEN_DIRECT_IO, 0
	}
	return h, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *fileNode) Release(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	if n.m.sess.check(fh) != 0 {
		return 0 // the server that knew of the handle is gone
	}
	// Release must reach the server even if the closing process is gone.
	if _, err := n.m.cfg.Storage.CloseFile(context.WithoutCancel(ctx), &storagev1.CloseFileRequest{FileId: n.id}); err != nil {
		return n.m.fail("close", n.name, err)
	}
	return 0
}

func (n *fileNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if n.shm {
		// A -shm's page faults come through the handle it was mapped
		// with: after the server is back, such a process reads the new
		// index rather than get SIGBUS; its next database read fails.
		fh = nil
	}
	if errno := n.m.sess.check(fh); errno != 0 {
		return nil, errno
	}
	resp, err := n.m.cfg.Storage.ReadFile(ctx, &storagev1.ReadFileRequest{FileId: n.id, Offset: off, Length: int64(len(dest))})
	if err != nil {
		return nil, n.m.fail("read", n.name, err)
	}
	return fuse.ReadResultData(resp.GetData()), 0
}

func (n *fileNode) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if errno := n.m.sess.check(fh); errno != 0 {
		return 0, errno
	}
	if _, err := n.m.cfg.Storage.WriteFile(ctx, &storagev1.WriteFileRequest{FileId: n.id, Offset: off, Data: data, Internal: isInternal(fh)}); err != nil {
		return 0, n.m.fail("write", n.name, err)
	}
	return uint32(len(data)), 0
}

func (n *fileNode) Fsync(ctx context.Context, fh fs.FileHandle, _ uint32) syscall.Errno {
	if errno := n.m.sess.check(fh); errno != 0 {
		return errno
	}
	if _, err := n.m.cfg.Storage.SyncFile(ctx, &storagev1.SyncFileRequest{FileId: n.id, Internal: isInternal(fh)}); err != nil {
		return n.m.fail("fsync", n.name, err)
	}
	return 0
}

func (n *fileNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if errno := n.m.sess.check(fh); errno != 0 {
		return errno
	}
	// By id: an open file deleted since (a -shm at last close) still has
	// attributes; one replaced since is stale, and the kernel looks it up anew.
	resp, err := n.m.cfg.Storage.StatFile(ctx, &storagev1.StatFileRequest{FileId: n.id})
	if err != nil {
		return n.m.fail("stat", n.name, err)
	}
	n.fill(resp.GetFile(), &out.Attr)
	if !n.volatile {
		out.SetTimeout(n.m.cfg.CacheTimeout)
	}
	return 0
}

func (n *fileNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := n.m.sess.check(fh); errno != 0 {
		return errno
	}
	if size, ok := in.GetSize(); ok {
		resp, err := n.m.cfg.Storage.TruncateFile(ctx, &storagev1.TruncateFileRequest{FileId: n.id, Size: int64(size), Internal: isInternal(fh)})
		if err != nil {
			return n.m.fail("truncate", n.name, err)
		}
		n.fill(resp.GetFile(), &out.Attr)
		if !n.volatile {
			out.SetTimeout(n.m.cfg.CacheTimeout)
		}
		return 0
	}
	// Modes, owners and times are not stored: every file is 0644, root's.
	return n.Getattr(ctx, fh, out)
}
