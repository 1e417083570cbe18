package fusemount

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/internal/safego"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
)

// Config configures a Mount. Build one with DefaultConfig and fill in Dir
// and Storage.
type Config struct {
	Dir        string                         // the mount point (fuse.dir); required
	Storage    storagev1.StorageServiceClient // the storage server; required
	AllowOther bool                           // fuse.allow-other
	Debug      bool                           // fuse.debug: log every FUSE request
	Logger     *slog.Logger                   // nil: slog.Default()
	Registry   prometheus.Registerer          // where FUSE request counters go; nil: none
	// CacheTimeout is how long the kernel trusts names and attributes of
	// files whose content only changes through this mount. Must be >= 0;
	// 0 makes the kernel ask on every lookup. DefaultConfig sets
	// DefaultCacheTimeout.
	CacheTimeout time.Duration
}

// DefaultCacheTimeout is the CacheTimeout that DefaultConfig sets.
const DefaultCacheTimeout = time.Second

// DefaultConfig returns a Config with every optional value set.
func DefaultConfig() Config {
	return Config{CacheTimeout: DefaultCacheTimeout}
}

// Validate reports the first missing or bad value, saying what to set.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New(`fuse.dir is not set: set it to the directory apps open databases in, e.g. "/litefs"`)
	case c.Storage == nil:
		return errors.New("fusemount: Config.Storage is nil: pass a client of the node's storage server")
	case c.CacheTimeout < 0:
		return fmt.Errorf("fusemount: Config.CacheTimeout is %s: use 0 or a positive duration; DefaultConfig sets %s", c.CacheTimeout, DefaultCacheTimeout)
	}
	return nil
}

// Mount is the FUSE filesystem of one node.
type Mount struct {
	cfg   Config
	log   *slog.Logger
	ready chan struct{}
	sess  session // the storage server's mount session, as the mount holds it

	// trustMu guards trusted.
	trustMu sync.Mutex
	trusted []int // processes whose writes are the node's own
}

// Trust makes writes from process pid count as the node's own (internal):
// the node's apply worker on a replica.
func (m *Mount) Trust(pid int) {
	m.trustMu.Lock()
	defer m.trustMu.Unlock()
	m.trusted = append(m.trusted, pid)
}

// New validates cfg; Run mounts.
func New(cfg Config) (*Mount, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Mount{cfg: cfg, log: log.With(logkey.Component, "fusemount"), ready: make(chan struct{})}, nil
}

// Ready is closed once the filesystem is mounted and serving.
func (m *Mount) Ready() <-chan struct{} { return m.ready }

// Run mounts the filesystem, serves it until ctx is done, then unmounts.
// A stale mount left at the mount point by a killed node is cleared first.
//
// The mount first takes the storage server's mount session, and fails
// with a *pagewire.MountedError if another mount holds it. It holds the
// session while it runs: if the server goes away, every operation fails
// with EIO until the mount has the session again, and files opened before
// fail with EIO for good.
func (m *Mount) Run(ctx context.Context) error {
	dir := m.cfg.Dir
	sessCtx, stopSession := context.WithCancel(ctx)
	defer stopSession()
	stream, err := m.holdSession(sessCtx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it mounted: nothing to undo
		}
		return fmt.Errorf("mount %q: %w", dir, err)
	}
	m.sess.set(true)

	// Prepare the mount point.
	clearStaleMount(dir, m.log)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create fuse.dir %q: %w; fix its permissions or choose another fuse.dir", dir, err)
	}

	// Mount and serve; done is closed when the server stops, and served
	// then says why: a panic in go-fuse's loop, or nil.
	root := &rootNode{m: m}
	srv, served, err := m.mount(root)
	if err != nil {
		return err
	}
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		_ = safego.Call(m.log, "hold the mount session", func() error { m.keepSession(sessCtx, root, stream); return nil })
	}()
	defer func() {
		stopSession()
		<-kept
	}()
	done := make(chan struct{})
	go func() {
		srv.Wait()
		close(done)
	}()

	// Follow the server's changes until Run returns; the mount is ready
	// once the first watch stream is up. A panic there ends Run: the
	// kernel would keep serving stale pages without it.
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	watching := make(chan struct{})
	watchFailed := make(chan error, 1)
	go func() {
		defer close(watching)
		if err := safego.Call(m.log, "watch the storage server", func() error { m.watch(watchCtx, root, watched); return nil }); err != nil {
			watchFailed <- err
		}
	}()
	defer func() {
		stopWatch()
		<-watching
	}()
	select {
	case <-watched:
		m.log.Info("mounted", logkey.Dir, dir)
		close(m.ready)
	case <-ctx.Done():
	case err := <-watchFailed:
		return errors.Join(err, m.unmount(srv, done))
	}

	// Serve until ctx is done, unless the mount goes away first.
	select {
	case <-ctx.Done():
	case <-done:
		if err := <-served; err != nil {
			return errors.Join(err, m.unmount(srv, done))
		}
		return fmt.Errorf("fuse mount %q ended unexpectedly (unmounted from outside?)", dir)
	case err := <-watchFailed:
		return errors.Join(err, m.unmount(srv, done))
	}
	return m.unmount(srv, done)
}

// mount mounts root at cfg.Dir and starts serving it. served gets nil
// when the server stops, or the panic that stopped it.
func (m *Mount) mount(root *rootNode) (srv *fuse.Server, served <-chan error, err error) {
	dir := m.cfg.Dir
	opts := m.options()
	rawFS := newCountingFS(fs.NewNodeFS(root, opts), m.cfg.Registry)
	readers := goFuseReaderLimit()
	if err := checkDevice(); err != nil {
		return nil, nil, err
	}
	srv, err = fuse.NewServer(rawFS, dir, &opts.MountOptions)
	if err != nil {
		return nil, nil, mountError(dir, err, hasCapability(capSysAdmin))
	}
	reserveReaderProcs(readers, m.log)
	// go-fuse recovers a panic in a request's handler (PanicHandler); this
	// covers its own loop, which reads requests off /dev/fuse.
	done := make(chan error, 1)
	go func() { done <- safego.Call(m.log, "serve FUSE", func() error { srv.Serve(); return nil }) }()
	if err := srv.WaitMount(); err != nil {
		_ = srv.Unmount()
		return nil, nil, fmt.Errorf("mount %q: %w", dir, err)
	}
	if err := closeOnExecDevFuse(); err != nil {
		_ = srv.Unmount()
		return nil, nil, fmt.Errorf("mount %q: mark /dev/fuse close-on-exec: %w", dir, err)
	}
	return srv, done, nil
}

// options returns go-fuse's options for the mount.
func (m *Mount) options() *fs.Options {
	timeout := m.cfg.CacheTimeout
	negative := timeout
	return &fs.Options{
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &negative,
		MountOptions: fuse.MountOptions{
			FsName:      "pagewire",
			Name:        "pagewire",
			AllowOther:  m.cfg.AllowOther,
			Debug:       m.cfg.Debug,
			DirectMount: true,
			// As root, fusermount would make the same mount(2) call and
			// hide its errno behind an exit code; mountError needs it.
			DirectMountStrict:        os.Geteuid() == 0,
			DisableXAttrs:            true, // else a security.capability lookup per write()
			ExplicitDataCacheControl: true, // keep the page cache; the server says when to drop it
			MaxWrite:                 1 << 20,
			MaxReadAhead:             1 << 20,
			PanicHandler:             m.recoveredOp,
		},
	}
}

// recoveredOp is go-fuse's PanicHandler: go-fuse recovers a panic in a
// FUSE operation, and the app sees EIO. It is logged with its stack like
// any recovered panic (go-fuse's default logs outside slog).
func (m *Mount) recoveredOp(p any) fuse.Status {
	safego.Recovered(m.log, "a FUSE operation", p)
	return fuse.EIO
}

// unmount unmounts, retrying while files are busy, and detaches lazily as a
// last resort so that no mount is left behind.
func (m *Mount) unmount(srv *fuse.Server, done <-chan struct{}) error {
	var err error
	for i := 0; i < 20; i++ {
		if err = srv.Unmount(); err == nil {
			break
		}
		t := time.NewTimer(100 * time.Millisecond)
		<-t.C
	}
	if err != nil {
		m.log.Warn("mount is busy; detaching it lazily", logkey.Dir, m.cfg.Dir, logkey.Error, err)
		if derr := syscall.Unmount(m.cfg.Dir, syscall.MNT_DETACH); derr != nil {
			return fmt.Errorf("unmount %q: %w", m.cfg.Dir, err)
		}
	}
	<-done
	m.log.Info("unmounted", logkey.Dir, m.cfg.Dir)
	return nil
}

// clearStaleMount detaches a FUSE mount whose daemon died (stat gives
// ENOTCONN), as kill -9 of a node leaves behind.
func clearStaleMount(dir string, log *slog.Logger) {
	// Mounts can be stacked (a crash while an earlier stale one was
	// still there): clear until the folder answers.
	for range 10 {
		var st syscall.Stat_t
		err := syscall.Stat(dir, &st)
		if !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.ECONNABORTED) {
			return
		}
		log.Warn("clearing a stale mount left by a previous run", logkey.Dir, dir)
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			log.Warn("could not clear the stale mount; unmount it by hand (umount -l)", logkey.Dir, dir, logkey.Error, err)
			return
		}
	}
}
