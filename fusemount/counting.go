package fusemount

import (
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"
)

// countingFS counts and times the FUSE requests the kernel sends, by
// opcode: the bench reports FUSE round trips per transaction
// (pagewire_fuse_requests_total{op}), dashboards the time the mount takes
// to answer (pagewire_fuse_request_duration_seconds{op}).
type countingFS struct {
	fuse.RawFileSystem
	c map[string]opMetrics
}

// opMetrics are one opcode's counter and latency histogram.
type opMetrics struct {
	n prometheus.Counter
	d prometheus.Observer
}

// done counts a request answered, that started at start.
func (m opMetrics) done(start time.Time) {
	m.n.Inc()
	m.d.Observe(time.Since(start).Seconds())
}

// fuseLatencyBuckets span a page-cache hit's few microseconds to a commit
// that waits seconds for replicas: 10 us, 40 us, ... 2.6 s.
var fuseLatencyBuckets = prometheus.ExponentialBuckets(10e-6, 4, 10)

var countedOps = []string{"LOOKUP", "GETATTR", "SETATTR", "UNLINK", "ACCESS", "GETXATTR", "CREATE", "OPEN",
	"READ", "GETLK", "SETLK", "SETLKW", "RELEASE", "WRITE", "FLUSH", "FSYNC", "FALLOCATE", "OPENDIR",
	"READDIR", "READDIRPLUS", "FSYNCDIR", "STATFS", "STATX", "LSEEK"}

func newCountingFS(fs fuse.RawFileSystem, reg prometheus.Registerer) *countingFS {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pagewire_fuse_requests_total",
		Help: "FUSE requests the kernel sent the mount, by opcode.",
	}, []string{"op"})
	hist := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pagewire_fuse_request_duration_seconds",
		Help:    "Time the mount took to answer a FUSE request, by opcode.",
		Buckets: fuseLatencyBuckets,
	}, []string{"op"})
	if reg != nil {
		reg.MustRegister(vec, hist)
	}
	c := make(map[string]opMetrics, len(countedOps))
	for _, op := range countedOps {
		c[op] = opMetrics{n: vec.WithLabelValues(op), d: hist.WithLabelValues(op)}
	}
	return &countingFS{RawFileSystem: fs, c: c}
}

func (f *countingFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	defer f.c["LOOKUP"].done(time.Now())
	return f.RawFileSystem.Lookup(cancel, h, name, out)
}

func (f *countingFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer f.c["GETATTR"].done(time.Now())
	return f.RawFileSystem.GetAttr(cancel, in, out)
}

func (f *countingFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer f.c["SETATTR"].done(time.Now())
	return f.RawFileSystem.SetAttr(cancel, in, out)
}

func (f *countingFS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer f.c["UNLINK"].done(time.Now())
	return f.RawFileSystem.Unlink(cancel, h, name)
}

func (f *countingFS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	defer f.c["ACCESS"].done(time.Now())
	return f.RawFileSystem.Access(cancel, in)
}

func (f *countingFS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	defer f.c["GETXATTR"].done(time.Now())
	return f.RawFileSystem.GetXAttr(cancel, h, attr, dest)
}

func (f *countingFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	defer f.c["CREATE"].done(time.Now())
	return f.RawFileSystem.Create(cancel, in, name, out)
}

func (f *countingFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer f.c["OPEN"].done(time.Now())
	return f.RawFileSystem.Open(cancel, in, out)
}

func (f *countingFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	defer f.c["READ"].done(time.Now())
	return f.RawFileSystem.Read(cancel, in, buf)
}

func (f *countingFS) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	defer f.c["GETLK"].done(time.Now())
	return f.RawFileSystem.GetLk(cancel, in, out)
}

func (f *countingFS) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	defer f.c["SETLK"].done(time.Now())
	return f.RawFileSystem.SetLk(cancel, in)
}

func (f *countingFS) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	defer f.c["SETLKW"].done(time.Now())
	return f.RawFileSystem.SetLkw(cancel, in)
}

func (f *countingFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	defer f.c["RELEASE"].done(time.Now())
	f.RawFileSystem.Release(cancel, in)
}

func (f *countingFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	defer f.c["WRITE"].done(time.Now())
	return f.RawFileSystem.Write(cancel, in, data)
}

func (f *countingFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	defer f.c["WRITE"].done(time.Now())
	return f.RawFileSystem.Writev(cancel, in, data)
}

func (f *countingFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	defer f.c["FLUSH"].done(time.Now())
	return f.RawFileSystem.Flush(cancel, in)
}

func (f *countingFS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	defer f.c["FSYNC"].done(time.Now())
	return f.RawFileSystem.Fsync(cancel, in)
}

func (f *countingFS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	defer f.c["FALLOCATE"].done(time.Now())
	return f.RawFileSystem.Fallocate(cancel, in)
}

func (f *countingFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer f.c["OPENDIR"].done(time.Now())
	return f.RawFileSystem.OpenDir(cancel, in, out)
}

func (f *countingFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer f.c["READDIR"].done(time.Now())
	return f.RawFileSystem.ReadDir(cancel, in, out)
}

func (f *countingFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer f.c["READDIRPLUS"].done(time.Now())
	return f.RawFileSystem.ReadDirPlus(cancel, in, out)
}

func (f *countingFS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	defer f.c["FSYNCDIR"].done(time.Now())
	return f.RawFileSystem.FsyncDir(cancel, in)
}

func (f *countingFS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	defer f.c["STATFS"].done(time.Now())
	return f.RawFileSystem.StatFs(cancel, h, out)
}

func (f *countingFS) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	defer f.c["STATX"].done(time.Now())
	return f.RawFileSystem.Statx(cancel, in, out)
}

func (f *countingFS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	defer f.c["LSEEK"].done(time.Now())
	return f.RawFileSystem.Lseek(cancel, in, out)
}
