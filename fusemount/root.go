package fusemount

import (
	"context"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/pagewire/pagewire/internal/logkey"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
)

// rootNode is the mount's only directory: one entry per database file.
type rootNode struct {
	fs.Inode
	m *Mount
}

var (
	_ fs.NodeLookuper  = (*rootNode)(nil)
	_ fs.NodeReaddirer = (*rootNode)(nil)
	_ fs.NodeCreater   = (*rootNode)(nil)
	_ fs.NodeUnlinker  = (*rootNode)(nil)
	_ fs.NodeMkdirer   = (*rootNode)(nil)
	_ fs.NodeRenamer   = (*rootNode)(nil)
	_ fs.NodeFsyncer   = (*rootNode)(nil)
	_ fs.NodeGetattrer = (*rootNode)(nil)
	_ fs.NodeAccesser  = (*rootNode)(nil)
)

func (r *rootNode) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o755
	out.Nlink = 2
	return 0
}

// Access answers ENOSYS so the kernel stops asking (go-fuse "# Deadlocks" 1a).
func (r *rootNode) Access(context.Context, uint32) syscall.Errno { return syscall.ENOSYS }

func (r *rootNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := r.m.sess.check(nil); errno != 0 {
		return nil, errno
	}
	resp, err := r.m.cfg.Storage.LookupFile(ctx, &storagev1.LookupFileRequest{Name: name})
	if err != nil {
		errno := toErrno(err)
		if errno == syscall.EINVAL {
			errno = syscall.ENOENT // names that can't be databases simply don't exist
		}
		return nil, errno
	}
	return r.child(ctx, resp.GetFile(), out), 0
}

// child makes (or finds) the inode of a file and fills its entry.
func (r *rootNode) child(ctx context.Context, fi *storagev1.FileInfo, out *fuse.EntryOut) *fs.Inode {
	n := &fileNode{m: r.m, name: fi.GetName(), id: fi.GetFileId(), volatile: fi.GetVolatile(), readOnly: fi.GetReadOnly(),
		shm: strings.HasSuffix(fi.GetName(), "-shm")}
	n.fill(fi, &out.Attr)
	if fi.GetVolatile() {
		out.SetEntryTimeout(0)
		out.SetAttrTimeout(0)
	} else {
		out.SetEntryTimeout(r.m.cfg.CacheTimeout)
		out.SetAttrTimeout(r.m.cfg.CacheTimeout)
	}
	// A new session's files are new inodes to the kernel: a file opened
	// before keeps the old inode, whose cache forget dropped, so its reads
	// reach the mount and fail rather than find the new session's pages.
	gen, _ := r.m.sess.current()
	return r.NewInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFREG, Ino: fi.GetFileId(), Gen: gen})
}

func (r *rootNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	if errno := r.m.sess.check(nil); errno != 0 {
		return nil, errno
	}
	resp, err := r.m.cfg.Storage.ListFiles(ctx, &storagev1.ListFilesRequest{})
	if err != nil {
		return nil, r.m.fail("list files", "", err)
	}
	entries := make([]fuse.DirEntry, 0, len(resp.GetFiles()))
	for _, fi := range resp.GetFiles() {
		entries = append(entries, fuse.DirEntry{Name: fi.GetName(), Ino: fi.GetFileId(), Mode: syscall.S_IFREG})
	}
	return fs.NewListDirStream(entries), 0
}

func (r *rootNode) Create(ctx context.Context, name string, flags uint32, _ uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if errno := r.m.sess.check(nil); errno != 0 {
		return nil, nil, 0, errno
	}
	resp, err := r.m.cfg.Storage.CreateFile(ctx, &storagev1.CreateFileRequest{Name: name, Internal: r.m.callerIsNode(ctx)})
	if err != nil {
		return nil, nil, 0, r.m.fail("create", name, err)
	}
	fi := resp.GetFile()
	inode := r.child(ctx, fi, out)
	n := inode.Operations().(*fileNode)
	fh, fuseFlags, errno := n.open(ctx, flags)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return inode, fh, fuseFlags, 0
}

func (r *rootNode) Unlink(ctx context.Context, name string) syscall.Errno {
	if errno := r.m.sess.check(nil); errno != 0 {
		return errno
	}
	if _, err := r.m.cfg.Storage.DeleteFile(ctx, &storagev1.DeleteFileRequest{Name: name}); err != nil {
		return r.m.fail("delete", name, err)
	}
	return 0
}

func (r *rootNode) Mkdir(context.Context, string, uint32, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM // one flat directory of databases, as LiteFS
}

func (r *rootNode) Rename(_ context.Context, name string, _ fs.InodeEmbedder, newName string, _ uint32) syscall.Errno {
	r.m.log.Warn("rename is not supported on the mount; use `pagewire import` to replace a database", "from", name, "to", newName)
	return syscall.EPERM
}

func (r *rootNode) Fsync(ctx context.Context, _ fs.FileHandle, _ uint32) syscall.Errno {
	if errno := r.m.sess.check(nil); errno != 0 {
		return errno
	}
	if _, err := r.m.cfg.Storage.SyncDirectory(ctx, &storagev1.SyncDirectoryRequest{}); err != nil {
		return r.m.fail("sync directory", "", err)
	}
	return 0
}

// fail logs an unexpected storage error and returns its errno. Not-found is
// normal (SQLite probes for -journal and -wal) and is not logged.
func (m *Mount) fail(op, name string, err error) syscall.Errno {
	errno := toErrno(err)
	if errno != syscall.ENOENT && errno != syscall.EINTR && errno != syscall.ESTALE {
		m.log.Warn("storage call failed", "op", op, logkey.File, name, "errno", errno.Error(), logkey.Error, err)
	}
	return errno
}
