package fusemount

import (
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"
)

// countingFS counts the FUSE requests the kernel sends, by opcode, so that
// the bench can report FUSE round trips per transaction
// (pagewire_fuse_requests_total{op}).
type countingFS struct {
	fuse.RawFileSystem
	c map[string]prometheus.Counter
}

var countedOps = []string{"LOOKUP", "GETATTR", "SETATTR", "UNLINK", "ACCESS", "GETXATTR", "CREATE", "OPEN",
	"READ", "GETLK", "SETLK", "SETLKW", "RELEASE", "WRITE", "FLUSH", "FSYNC", "FALLOCATE", "OPENDIR",
	"READDIR", "READDIRPLUS", "FSYNCDIR", "STATFS", "STATX", "LSEEK"}

func newCountingFS(fs fuse.RawFileSystem, reg prometheus.Registerer) *countingFS {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pagewire_fuse_requests_total",
		Help: "FUSE requests the kernel sent the mount, by opcode.",
	}, []string{"op"})
	if reg != nil {
		reg.MustRegister(vec)
	}
	c := make(map[string]prometheus.Counter, len(countedOps))
	for _, op := range countedOps {
		c[op] = vec.WithLabelValues(op)
	}
	return &countingFS{RawFileSystem: fs, c: c}
}

func (f *countingFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	f.c["LOOKUP"].Inc()
	return f.RawFileSystem.Lookup(cancel, h, name, out)
}

func (f *countingFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	f.c["GETATTR"].Inc()
	return f.RawFileSystem.GetAttr(cancel, in, out)
}

func (f *countingFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	f.c["SETATTR"].Inc()
	return f.RawFileSystem.SetAttr(cancel, in, out)
}

func (f *countingFS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	f.c["UNLINK"].Inc()
	return f.RawFileSystem.Unlink(cancel, h, name)
}

func (f *countingFS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	f.c["ACCESS"].Inc()
	return f.RawFileSystem.Access(cancel, in)
}

func (f *countingFS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	f.c["GETXATTR"].Inc()
	return f.RawFileSystem.GetXAttr(cancel, h, attr, dest)
}

func (f *countingFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	f.c["CREATE"].Inc()
	return f.RawFileSystem.Create(cancel, in, name, out)
}

func (f *countingFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	f.c["OPEN"].Inc()
	return f.RawFileSystem.Open(cancel, in, out)
}

func (f *countingFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	f.c["READ"].Inc()
	return f.RawFileSystem.Read(cancel, in, buf)
}

func (f *countingFS) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	f.c["GETLK"].Inc()
	return f.RawFileSystem.GetLk(cancel, in, out)
}

func (f *countingFS) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	f.c["SETLK"].Inc()
	return f.RawFileSystem.SetLk(cancel, in)
}

func (f *countingFS) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	f.c["SETLKW"].Inc()
	return f.RawFileSystem.SetLkw(cancel, in)
}

func (f *countingFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	f.c["RELEASE"].Inc()
	f.RawFileSystem.Release(cancel, in)
}

func (f *countingFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	f.c["WRITE"].Inc()
	return f.RawFileSystem.Write(cancel, in, data)
}

func (f *countingFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	f.c["WRITE"].Inc()
	return f.RawFileSystem.Writev(cancel, in, data)
}

func (f *countingFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	f.c["FLUSH"].Inc()
	return f.RawFileSystem.Flush(cancel, in)
}

func (f *countingFS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	f.c["FSYNC"].Inc()
	return f.RawFileSystem.Fsync(cancel, in)
}

func (f *countingFS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	f.c["FALLOCATE"].Inc()
	return f.RawFileSystem.Fallocate(cancel, in)
}

func (f *countingFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	f.c["OPENDIR"].Inc()
	return f.RawFileSystem.OpenDir(cancel, in, out)
}

func (f *countingFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	f.c["READDIR"].Inc()
	return f.RawFileSystem.ReadDir(cancel, in, out)
}

func (f *countingFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	f.c["READDIRPLUS"].Inc()
	return f.RawFileSystem.ReadDirPlus(cancel, in, out)
}

func (f *countingFS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	f.c["FSYNCDIR"].Inc()
	return f.RawFileSystem.FsyncDir(cancel, in)
}

func (f *countingFS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	f.c["STATFS"].Inc()
	return f.RawFileSystem.StatFs(cancel, h, out)
}

func (f *countingFS) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	f.c["STATX"].Inc()
	return f.RawFileSystem.Statx(cancel, in, out)
}

func (f *countingFS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	f.c["LSEEK"].Inc()
	return f.RawFileSystem.Lseek(cancel, in, out)
}
