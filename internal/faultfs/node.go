package faultfs

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// node is a file or folder of the mount: go-fuse's loopback node for what
// changes nothing (lookup, getattr, readdir, xattrs), and the model around
// everything that changes a name or a file's content.
type node struct {
	*fs.LoopbackNode
	st *state
}

var (
	_ fs.NodeWrapChilder    = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeMkdirer        = (*node)(nil)
	_ fs.NodeMknoder        = (*node)(nil)
	_ fs.NodeSymlinker      = (*node)(nil)
	_ fs.NodeLinker         = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRmdirer        = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeCopyFileRanger = (*node)(nil)
	_ fs.NodeTmpfiler       = (*node)(nil)
)

// WrapChild makes every node go-fuse's loopback creates one of ours.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode), st: n.st}
}

// path is the node's path in the backing directory.
func (n *node) path() string { return filepath.Join(n.RootData.Path, n.Path(nil)) }

// Create opens a file, creating it if need be. A new file is durably empty.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	s := n.st
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		return nil, nil, 0, syscall.EIO
	}
	dir := n.path()
	if _, err := s.dir(dir); err != nil {
		return nil, nil, 0, fs.ToErrno(err)
	}
	p := filepath.Join(dir, name)
	_, statErr := lstatIno(p)
	fd, err := syscall.Open(p, readable(flags&^(syscall.O_APPEND|syscall.O_TRUNC))|syscall.O_CREAT|syscall.O_CLOEXEC, mode)
	if err != nil {
		return nil, nil, 0, fs.ToErrno(err)
	}
	h := &handle{st: s, fd: fd}
	if statErr != nil {
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			syscall.Close(fd)
			return nil, nil, 0, fs.ToErrno(err)
		}
		s.forget(st.Ino) // whatever an earlier inode of that number left
		s.files[st.Ino] = &fileRec{}
	} else if flags&syscall.O_TRUNC != 0 {
		if errno := h.truncateLocked(0); errno != 0 {
			syscall.Close(fd)
			return nil, nil, 0, errno
		}
	}
	ch, errno := n.LoopbackNode.Lookup(ctx, name, out)
	if errno != 0 {
		syscall.Close(fd)
		return nil, nil, 0, errno
	}
	return ch, h, 0, 0
}

// readable turns write-only open flags into read-write ones: the model
// reads what a write is about to replace. (The kernel checked the caller's
// permissions already.)
func readable(flags uint32) int {
	if flags&syscall.O_ACCMODE == syscall.O_WRONLY {
		flags = flags&^syscall.O_ACCMODE | syscall.O_RDWR
	}
	return int(flags)
}

// Open opens a file; O_TRUNC truncates through the model.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	flags &^= syscall.O_APPEND | fuse.FMODE_EXEC
	fd, err := syscall.Open(n.path(), readable(flags&^syscall.O_TRUNC)|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, fs.ToErrno(err)
	}
	h := &handle{st: n.st, fd: fd}
	if flags&syscall.O_TRUNC != 0 {
		n.st.mu.Lock()
		errno := syscall.EIO
		if !n.st.cut {
			errno = h.truncateLocked(0)
		}
		n.st.mu.Unlock()
		if errno != 0 {
			syscall.Close(fd)
			return nil, 0, errno
		}
	}
	return h, 0, 0
}

// OpendirHandle opens a folder; its fsync makes its entries durable.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	ds, errno := fs.NewLoopbackDirStream(n.path())
	if errno != 0 {
		return nil, 0, errno
	}
	return &dirHandle{n: n, ds: ds}, 0, 0
}

// Mkdir makes a folder, durably empty.
func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	s := n.st
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		return nil, syscall.EIO
	}
	dir := n.path()
	if _, err := s.dir(dir); err != nil {
		return nil, fs.ToErrno(err)
	}
	p := filepath.Join(dir, name)
	if err := syscall.Mkdir(p, mode); err != nil {
		return nil, fs.ToErrno(err)
	}
	st, err := lstatIno(p)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	s.forget(st.Ino)
	s.dirs[st.Ino] = &dirRec{durable: map[string]uint64{}}
	return n.LoopbackNode.Lookup(ctx, name, out)
}

// Mknod makes a FIFO or socket: a name and no content.
func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	s := n.st
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		return nil, syscall.EIO
	}
	if _, err := s.dir(n.path()); err != nil {
		return nil, fs.ToErrno(err)
	}
	return n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
}

// Symlink makes a symbolic link: a name, and content fixed at creation.
func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	s := n.st
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		return nil, syscall.EIO
	}
	if _, err := s.dir(n.path()); err != nil {
		return nil, fs.ToErrno(err)
	}
	return n.LoopbackNode.Symlink(ctx, target, name, out)
}

// Link is not modelled.
func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.ENOTSUP
}

// Tmpfile (O_TMPFILE) is not modelled.
func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.ENOTSUP
}

// CopyFileRange is not modelled; the kernel falls back to read and write.
func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.ENOTSUP
}

// Unlink removes a name; the inode stays in the grave while a folder names
// it durably.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	s := n.st
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		return syscall.EIO
	}
	dir := n.path()
	if _, err := s.dir(dir); err != nil {
		return fs.ToErrno(err)
	}
	p := filepath.Join(dir, name)
	st, err := lstatIno(p)
	if err != nil {
		return fs.ToErrno(err)
	}
	if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		return syscall.EISDIR
	}
	buried, err := s.bury(p, st.Ino, false)
	if err != nil {
		return fs.ToErrno(err)
	}
	if err := syscall.Unlink(p); err != nil {
		if buried {
			s.unbury(st.Ino, "", false)
		}
		return fs.ToErrno(err)
	}
	if !s.graved[st.Ino] {
		s.forget(st.Ino)
	}
	return 0
}

// Rmdir removes an empty folder, kept in the grave while its parent names
// it durably.
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	s := n.st
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		return syscall.EIO
	}
	dir := n.path()
	if _, err := s.dir(dir); err != nil {
		return fs.ToErrno(err)
	}
	p := filepath.Join(dir, name)
	st, err := lstatIno(p)
	if err != nil {
		return fs.ToErrno(err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return syscall.ENOTDIR
	}
	if s.refs[st.Ino] > 0 {
		if errno := emptyDir(p); errno != 0 {
			return errno
		}
		if _, err := s.bury(p, st.Ino, true); err != nil {
			return fs.ToErrno(err)
		}
		return 0
	}
	if err := syscall.Rmdir(p); err != nil {
		return fs.ToErrno(err)
	}
	s.forget(st.Ino)
	return 0
}

func emptyDir(p string) syscall.Errno {
	f, err := os.Open(p)
	if err != nil {
		return fs.ToErrno(err)
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if len(names) > 0 {
		return syscall.ENOTEMPTY
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return fs.ToErrno(err)
	}
	return 0
}

// Rename moves a name; an inode it replaces stays in the grave while a
// folder names it durably. Flags: RENAME_NOREPLACE only.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if flags&^unix.RENAME_NOREPLACE != 0 {
		return syscall.ENOTSUP
	}
	s := n.st
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		return syscall.EIO
	}
	from, to := n.path(), np.path()
	if _, err := s.dir(from); err != nil {
		return fs.ToErrno(err)
	}
	if _, err := s.dir(to); err != nil {
		return fs.ToErrno(err)
	}
	src, dst := filepath.Join(from, name), filepath.Join(to, newName)
	sst, err := lstatIno(src)
	if err != nil {
		return fs.ToErrno(err)
	}
	dstSt, err := lstatIno(dst)
	exists := err == nil
	buried, dstDir := false, false
	if exists {
		if flags&unix.RENAME_NOREPLACE != 0 {
			return syscall.EEXIST
		}
		if dstSt.Ino == sst.Ino {
			return 0
		}
		srcDir := sst.Mode&syscall.S_IFMT == syscall.S_IFDIR
		dstDir = dstSt.Mode&syscall.S_IFMT == syscall.S_IFDIR
		switch {
		case dstDir && !srcDir:
			return syscall.EISDIR
		case !dstDir && srcDir:
			return syscall.ENOTDIR
		case dstDir:
			if errno := emptyDir(dst); errno != 0 {
				return errno
			}
		}
		if buried, err = s.bury(dst, dstSt.Ino, dstDir); err != nil {
			return fs.ToErrno(err)
		}
	}
	if err := syscall.Rename(src, dst); err != nil {
		if buried {
			s.unbury(dstSt.Ino, dst, dstDir)
		}
		return fs.ToErrno(err)
	}
	if exists && !s.graved[dstSt.Ino] {
		s.forget(dstSt.Ino)
	}
	return 0
}

// Setattr changes a size through the model; modes, owners and times pass
// through and are durable at once.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	h, _ := f.(*handle)
	if h != nil {
		h.mu.Lock()
		defer h.mu.Unlock()
	}
	if sz, ok := in.GetSize(); ok {
		s := n.st
		s.mu.Lock()
		var errno syscall.Errno
		if s.cut {
			errno = syscall.EIO
		} else if h != nil {
			errno = h.truncateLocked(int64(sz))
		} else if fd, err := syscall.Open(n.path(), syscall.O_RDWR|syscall.O_CLOEXEC, 0); err != nil {
			errno = fs.ToErrno(err)
		} else {
			errno = (&handle{st: s, fd: fd}).truncateLocked(int64(sz))
			syscall.Close(fd)
		}
		s.mu.Unlock()
		if errno != 0 {
			return errno
		}
		in.Valid &^= fuse.FATTR_SIZE
	}
	if in.Valid&^(fuse.FATTR_FH|fuse.FATTR_LOCKOWNER|fuse.FATTR_CTIME) != 0 {
		return n.LoopbackNode.Setattr(ctx, nil, in, out)
	}
	var st syscall.Stat_t
	var err error
	if h != nil {
		err = syscall.Fstat(h.fd, &st)
	} else {
		err = syscall.Lstat(n.path(), &st)
	}
	if err != nil {
		return fs.ToErrno(err)
	}
	out.FromStat(&st)
	return 0
}

// handle is an open regular file.
type handle struct {
	st *state
	mu sync.Mutex // guards fd against Release
	fd int
}

var (
	_ fs.FileReader    = (*handle)(nil)
	_ fs.FileWriter    = (*handle)(nil)
	_ fs.FileFsyncer   = (*handle)(nil)
	_ fs.FileFlusher   = (*handle)(nil)
	_ fs.FileReleaser  = (*handle)(nil)
	_ fs.FileGetattrer = (*handle)(nil)
	_ fs.FileAllocater = (*handle)(nil)
)

// truncateLocked sets the file's size, keeping the durable bytes it cuts.
// h.st.mu is held.
func (h *handle) truncateLocked(size int64) syscall.Errno {
	r, err := h.st.file(h.fd)
	if err != nil {
		return fs.ToErrno(err)
	}
	if err := r.save(h.fd, size, r.size); err != nil {
		return fs.ToErrno(err)
	}
	return fs.ToErrno(syscall.Ftruncate(h.fd, size))
}

func (h *handle) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n, err := syscall.Pread(h.fd, buf, off)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	return fuse.ReadResultData(buf[:n]), 0
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.st
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		return 0, syscall.EIO
	}
	r, err := s.file(h.fd)
	if err != nil {
		return 0, fs.ToErrno(err)
	}
	if err := r.save(h.fd, off, off+int64(len(data))); err != nil {
		return 0, fs.ToErrno(err)
	}
	n, err := syscall.Pwrite(h.fd, data, off)
	return uint32(n), fs.ToErrno(err)
}

// Fsync makes the file's content and size durable. The backing file is
// not fsynced: the simulation's durability is the model's, not the disk's.
// With a fsync delay it takes that long first, and a power cut that
// begins meanwhile makes it fail, not durable.
func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.st
	if d := time.Duration(s.fsyncDelay.Load()); d > 0 {
		time.Sleep(d)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		return syscall.EIO
	}
	return fs.ToErrno(s.syncFile(h.fd))
}

func (h *handle) Flush(ctx context.Context) syscall.Errno { return 0 }

func (h *handle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fd < 0 {
		return syscall.EBADF
	}
	err := syscall.Close(h.fd)
	h.fd = -1
	return fs.ToErrno(err)
}

func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	var st syscall.Stat_t
	if err := syscall.Fstat(h.fd, &st); err != nil {
		return fs.ToErrno(err)
	}
	out.FromStat(&st)
	return 0
}

// Allocate (fallocate) is not modelled.
func (h *handle) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	return syscall.ENOTSUP
}

// dirHandle is an open folder: go-fuse's loopback listing, and an fsync
// that makes the folder's entries durable.
type dirHandle struct {
	n  *node
	ds fs.DirStream
}

var (
	_ fs.FileFsyncdirer   = (*dirHandle)(nil)
	_ fs.FileReaddirenter = (*dirHandle)(nil)
	_ fs.FileSeekdirer    = (*dirHandle)(nil)
	_ fs.FileReleasedirer = (*dirHandle)(nil)
)

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	s := d.n.st
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		return syscall.EIO
	}
	return fs.ToErrno(s.syncDir(d.n.path()))
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if r, ok := d.ds.(fs.FileReaddirenter); ok {
		return r.Readdirent(ctx)
	}
	if !d.ds.HasNext() {
		return nil, 0
	}
	e, errno := d.ds.Next()
	return &e, errno
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if r, ok := d.ds.(fs.FileSeekdirer); ok {
		return r.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	if r, ok := d.ds.(fs.FileReleasedirer); ok {
		r.Releasedir(ctx, flags)
		return
	}
	d.ds.Close()
}
