package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"gocloud.dev/blob"
	"golang.org/x/sync/errgroup"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/backup"
	"github.com/pagewire/pagewire/config"
	"github.com/pagewire/pagewire/engine"
	"github.com/pagewire/pagewire/fusemount"
	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/internal/safego"
	"github.com/pagewire/pagewire/internal/wire"
	"github.com/pagewire/pagewire/leaser"
	"github.com/pagewire/pagewire/leaser/consul"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
	"github.com/pagewire/pagewire/proxy"
	"github.com/pagewire/pagewire/replicator"
	"github.com/pagewire/pagewire/replicator/upstream"
	"github.com/pagewire/pagewire/roles"
	"github.com/pagewire/pagewire/server"
)

// node is one running pagewire node: the parts that runMount's steps
// build, in the order it builds them.
type node struct {
	sigs chan os.Signal // SIGINT and SIGTERM: they stop the node until the app runs

	// Set by loadConfig and identify.
	cfg     config.Config
	app     []string // the command after --, if any
	log     *slog.Logger
	info    server.NodeInfo
	dynamic bool // lease.type consul: roles.Manager decides the role
	// external: the node mounts nothing; `pagewire fuse` in another
	// process mounts its storage socket (mount's -external-fuse).
	external bool

	// Set by secure: what the node shows the nodes it calls, and its
	// port's TLS (nil: plaintext).
	creds     wire.Credentials
	serverTLS *tls.Config

	store *engine.Store // set by openStore

	// applier is set once the apply worker runs: it applies a replica's
	// transactions, and holds the primary's write lock for halt locks.
	applier  atomic.Pointer[replicator.ApplyClient]
	current  atomic.Pointer[follower] // the replica's newest follower
	applyLag prometheus.Histogram     // a replica's, in /metrics

	// Set by decideRole: at most one of them.
	manager  *roles.Manager  // with a Consul lease
	replica  *follower       // a static replica's
	conflict *staticConflict // a static primary's check for another

	// Set by listen, newProxy, newServer and newMount.
	lis net.Listener
	prx *proxy.Proxy // nil without proxy.addr
	reg *prometheus.Registry
	srv *server.Server
	mnt *fusemount.Mount

	prxNode *proxyNode // the node as prx sees it; set by newProxy

	// Set by openBackup when backup is configured.
	bucket   *blob.Bucket
	uploader *backup.Uploader

	// Set by run.
	g      *errgroup.Group
	stop   context.CancelFunc // stops the node
	users  sync.WaitGroup     // the app and replication, while they run
	appErr error              // the app's exit, once the group is done
}

// loadConfig parses the mount command's flags, loads the config and
// makes the logger.
func (n *node) loadConfig(args []string) error {
	fset := flag.NewFlagSet("mount", flag.ContinueOnError)
	configPath := fset.String("config", "", "config file (default: ./pagewire.yml, ./litefs.yml, /etc/pagewire.yml, /etc/litefs.yml, else the embedded single-node default)")
	restore := fset.Bool("restore-on-start", false, "restore every database from the backup if data.dir has none (overrides backup.restore-on-start; =false turns it off)")
	external := fset.Bool("external-fuse", false, "mount nothing here: `pagewire fuse` in another process mounts the storage socket (a static primary only)")
	if err := fset.Parse(args); err != nil {
		return errUsage
	}
	cfg, source, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	if err := overrideRestoreOnStart(fset, *restore, &cfg.Backup, source); err != nil {
		return err
	}
	if *external && (cfg.Lease.Type == config.LeaseTypeConsul || !cfg.Lease.Candidate) {
		return fmt.Errorf("-external-fuse needs a static primary (lease.type static, lease.candidate true) in %s: a replica applies its primary's transactions through its own mount", source)
	}
	n.cfg, n.external = cfg, *external
	n.log = newLogger(cfg.Log)
	for _, ig := range cfg.Ignored {
		n.log.Warn("ignoring a LiteFS config key pagewire does not use", "key", ig.Key, "line", ig.Line, logkey.Config, source)
	}
	n.log.Info("starting pagewire", "version", Version, logkey.Config, source, "fuse.dir", cfg.FUSE.Dir, "data.dir", cfg.Data.Dir, "http.addr", cfg.HTTP.Addr)
	if argv := fset.Args(); len(argv) > 0 {
		n.app = argv
	}
	return nil
}

// overrideRestoreOnStart applies mount's -restore-on-start, when given, to
// backup.restore-on-start.
func overrideRestoreOnStart(fset *flag.FlagSet, restore bool, b *config.BackupConfig, source string) error {
	set := false
	fset.Visit(func(f *flag.Flag) { set = set || f.Name == "restore-on-start" })
	if !set {
		return nil
	}
	if restore && !b.Enabled() {
		return fmt.Errorf("-restore-on-start needs a backup to restore from, and %s configures none: set backup.type (file, s3, gcs or azure) and where backups go", source)
	}
	b.RestoreOnStart = restore
	return nil
}

// identify settles the node's hostname and advertise URL. With a static
// lease, a replica's lease.hostname and advertise-url are the primary's
// (as LiteFS); the node itself goes by the host's name. With a Consul
// lease they are this node's.
func (n *node) identify() error {
	lease := n.cfg.Lease
	n.info = server.NodeInfo{Hostname: lease.Hostname, AdvertiseURL: lease.AdvertiseURL, Version: Version, ID: server.NewNodeID()}
	n.dynamic = lease.Type == config.LeaseTypeConsul
	if (!lease.Candidate && !n.dynamic) || n.info.Hostname == "" {
		// $HOSTNAME first: Docker and Fly set it to the machine's name.
		if h := os.Getenv("HOSTNAME"); h != "" {
			n.info.Hostname = h
		} else if h, err := os.Hostname(); err == nil {
			n.info.Hostname = h
		}
		if !n.dynamic {
			n.info.AdvertiseURL = ""
		}
	}
	if n.dynamic && n.info.AdvertiseURL == "" {
		return errors.New("lease.advertise-url is required with lease.type consul: the URL other nodes reach this node's API at (on Fly.io: http://${FLY_ALLOC_ID}.vm.${FLY_APP_NAME}.internal:20202)")
	}
	return n.secure()
}

// openStore opens the store in data.dir.
func (n *node) openStore() error {
	scfg := engine.DefaultStoreConfig()
	scfg.Dir, scfg.Logger = n.cfg.Data.Dir, n.log
	if r := time.Duration(n.cfg.Data.Retention); r > 0 {
		scfg.Retention = r
	}
	if m := int64(n.cfg.Data.MaxImportSize); m > 0 {
		scfg.MaxImportSize = m
	}
	scfg.SyncReplicas, scfg.SyncTimeout = n.cfg.Replication.SyncReplicas, time.Duration(n.cfg.Replication.SyncTimeout)
	store, err := engine.OpenStore(scfg)
	if err != nil {
		return fmt.Errorf("open the store: %w", err)
	}
	n.store = store
	return nil
}

// openBackup opens the backup's bucket and makes the uploader, when
// backup is configured.
func (n *node) openBackup(ctx context.Context) error {
	bc := n.cfg.Backup
	if !bc.Enabled() {
		return nil
	}
	b, err := backup.OpenBucket(ctx, bc)
	if err != nil {
		return fmt.Errorf("open the backup (backup.type %s): %w", bc.Kind(), err)
	}
	spool := filepath.Join(n.cfg.Data.Dir, "spool")
	if err := os.MkdirAll(spool, 0o700); err != nil {
		b.Close()
		return fmt.Errorf("backup spool: %w", err)
	}
	levels := make([]time.Duration, len(bc.Levels))
	for i, l := range bc.Levels {
		levels[i] = time.Duration(l)
	}
	retention := time.Duration(bc.Retention)
	maintain := func(ctx context.Context, db string) error {
		now := time.Now()
		cs, err := backup.Compact(ctx, b, db, levels, now)
		if err != nil {
			return err
		}
		ps, err := backup.Prune(ctx, b, db, retention, now)
		if err != nil {
			return err
		}
		if cs.Objects > 0 || ps.Deleted > 0 {
			n.log.Info("backup compacted and pruned", logkey.DB, db, "compacted", cs.Objects, "compacted_bytes", cs.Bytes,
				"sources", cs.Sources, "deleted", ps.Deleted, "deleted_bytes", ps.Bytes)
		}
		return nil
	}
	n.bucket = b
	n.uploader = backup.NewUploader(backup.UploaderConfig{
		Bucket: b, Source: n.store, Node: n.info.Hostname, Dir: spool,
		Delay: time.Duration(bc.Delay), SnapshotInterval: time.Duration(bc.SnapshotInterval),
		Maintain: maintain, MaintainInterval: levels[0],
		Log: n.log,
	})
	n.log.Info("backing up", "backup", bc)
	return nil
}

// backupStatus is db's backup as this node uploads it.
func (n *node) backupStatus(db string) (server.BackupStatus, bool) {
	st, ok := n.uploader.Status(db)
	if !ok {
		return server.BackupStatus{}, false
	}
	return server.BackupStatus{TXID: st.Pos.TXID, Time: st.Time, Lag: st.Lag(time.Now()), Err: st.Err, Segment: st.Segment}, true
}

// decideRole sets the store's first role from lease.type and
// lease.candidate, and builds what keeps it: roles.Manager with a Consul
// lease, a follower on a static replica, a conflict check on a static
// primary.
func (n *node) decideRole() error {
	lease := n.cfg.Lease
	switch {
	case n.dynamic:
		if err := n.newManager(); err != nil {
			return fmt.Errorf("start the Consul lease: %w", err)
		}
		n.store.SetRole(pagewire.RoleReplica, pagewire.ReadOnlyError{}, 0)
	case lease.Candidate:
		n.store.SetRole(pagewire.RolePrimary, pagewire.ReadOnlyError{}, 1)
		if lease.AdvertiseURL != "" {
			n.conflict = &staticConflict{url: lease.AdvertiseURL, dial: n.dial, selfID: n.info.ID, store: n.store, log: n.log}
		}
	default:
		n.store.SetRole(pagewire.RoleReplica, pagewire.ReadOnlyError{Primary: lease.Hostname, AdvertiseURL: lease.AdvertiseURL}, 1)
		replica, err := n.newFollower(lease.AdvertiseURL, 1)
		if err != nil {
			return fmt.Errorf("lease.advertise-url: %w", err)
		}
		n.replica = replica
	}
	return nil
}

// newManager builds the Consul lease and the roles.Manager that follows
// or leads by it.
func (n *node) newManager() error {
	lease := n.cfg.Lease
	ccfg := consul.DefaultConfig()
	ccfg.URL, ccfg.Key = lease.Consul.URL, lease.Consul.Key
	ccfg.TTL, ccfg.LockDelay = time.Duration(lease.Consul.TTL), time.Duration(lease.Consul.LockDelay)
	ccfg.CheckTTL = time.Duration(lease.Consul.CheckTTL)
	ccfg.Candidate, ccfg.Node, ccfg.Logger = lease.Candidate, leaser.Info{Hostname: n.info.Hostname, AdvertiseURL: n.info.AdvertiseURL}, n.log
	lsr, err := consul.New(ccfg)
	if err != nil {
		return err
	}
	rcfg := roles.DefaultConfig()
	rcfg.Leaser, rcfg.Store, rcfg.Candidate, rcfg.Logger = lsr, n.store, lease.Candidate, n.log
	rcfg.Hostname, rcfg.Positions, rcfg.DemoteDelay = n.info.Hostname, storePositions(n.store), time.Duration(lease.DemoteDelay)
	rcfg.Follow = func(h leaser.Holder) (roles.Follower, error) { return n.newFollower(h.AdvertiseURL, h.Epoch) }
	if lease.Promote {
		rcfg.Promote = func(ctx context.Context, h leaser.Holder) error {
			return promote(ctx, n.dial, h, n.info.Hostname, n.store, n.log)
		}
	}
	n.manager, err = roles.New(rcfg)
	return err
}

// newFollower makes a replica of the primary at url.
func (n *node) newFollower(url string, minEpoch pagewire.Epoch) (*follower, error) {
	conn, err := n.dial(url)
	if err != nil {
		return nil, err
	}
	rcfg := replicator.DefaultReplicaConfig()
	rcfg.OpenWriter = func(ctx context.Context, path string) (replicator.Writer, error) { return n.openWriter(ctx, path) }
	rcfg.Upstream, rcfg.Local, rcfg.MountDir, rcfg.Hostname, rcfg.Logger = upstream.New(conn), n.store, n.cfg.FUSE.Dir, n.info.Hostname, n.log
	rcfg.MinEpoch = minEpoch
	rcfg.Applied = func(lag time.Duration) { n.applyLag.Observe(lag.Seconds()) }
	rcfg.OnPrimary = n.namePrimary
	r, err := replicator.NewReplica(rcfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	f := &follower{Replica: r, conn: conn}
	n.current.Store(f)
	return f, nil
}

// logKeyConfigured is the primary's name as the config gave it.
const logKeyConfigured = "configured"

// namePrimary shows the primary by the name it gives itself: a static
// replica's lease.hostname may be the primary's (as LiteFS's docs write
// it) or the replica's own, and .primary must name the primary either way.
func (n *node) namePrimary(p replicator.PrimaryInfo) {
	if _, ro := n.store.Role(); n.store.NamePrimary(p.Epoch, p.Hostname) {
		n.log.Info("the primary names itself otherwise than configured; showing its name", logkey.Primary, p.Hostname, logKeyConfigured, ro.Primary)
	}
}

// openWriter opens a writer on the mounted database at path through the
// apply worker.
func (n *node) openWriter(ctx context.Context, path string) (*replicator.RemoteWALWriter, error) {
	c := n.applier.Load()
	if c == nil {
		return nil, fmt.Errorf("%w: the node is starting; try again", pagewire.ErrBusy)
	}
	return c.Open(ctx, path)
}

// listen listens on http.addr for the storage server.
func (n *node) listen() error {
	lis, err := net.Listen("tcp", n.cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("listen on http.addr %q: %w; is another node running? change http.addr", n.cfg.HTTP.Addr, err)
	}
	n.lis = lis
	if addr, ok := lis.Addr().(*net.TCPAddr); ok {
		n.warnExposure(addr)
	}
	return nil
}

// newProxy builds the proxy if proxy.addr is set.
func (n *node) newProxy() error {
	if n.cfg.Proxy.Addr == "" {
		return nil
	}
	pn := &proxyNode{store: n.store, current: &n.current, dial: n.dial}
	prx, err := newProxy(n.cfg, n.info.Hostname, pn, n.log)
	if err != nil {
		return fmt.Errorf("start the proxy: %w", err)
	}
	n.prx, n.prxNode = prx, pn
	return nil
}

// newServer builds the storage server on the listener, and the registry
// its /metrics serves.
func (n *node) newServer() error {
	n.reg = newRegistry(n.applyLag)
	scfg := server.DefaultConfig()
	scfg.Store, scfg.Listener, scfg.Logger, scfg.Registry = n.store, n.lis, n.log, n.reg
	scfg.Node = n.info
	scfg.StorageSocket = n.cfg.Data.StorageSocketPath()
	scfg.HoldWriter = n.holdWriter
	scfg.Following = n.following
	if n.uploader != nil {
		scfg.Backup = n.backupStatus
		n.reg.MustRegister(n.uploader)
	}
	if n.conflict != nil {
		scfg.LeaseProblem = n.conflict.Problem
	}
	if n.manager != nil {
		scfg.LeaseProblem = n.manager.Problem
		scfg.Handoff = n.handoff
	}
	scfg.ProxyURL = proxyURL(n.cfg, n.info.AdvertiseURL)
	scfg.Auth = server.Auth{Tokens: n.cfg.Auth.Token, ProtectMetrics: n.cfg.Auth.ProtectMetrics}
	scfg.TLS, scfg.Credentials, scfg.ServeStorage = n.serverTLS, n.creds, n.cfg.HTTP.ServeStorage
	srv, err := server.New(scfg)
	if err != nil {
		return fmt.Errorf("start the storage server: %w", err)
	}
	n.srv = srv
	if n.prxNode != nil {
		n.prxNode.replicas = srv.IsReplica // where replicas forward writes from
	}
	return nil
}

// newRegistry returns the registry for the node's metrics: applyLag, and
// go_* and process_* beside them, as LiteFS has them; the scheduler's
// (go_sched_gomaxprocs_threads, go_sched_latencies_seconds) show whether
// goroutines wait for a CPU (see fusemount's procs.go).
func newRegistry(applyLag prometheus.Histogram) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsGC, collectors.MetricsScheduler)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	reg.MustRegister(applyLag)
	return reg
}

// newApplyLag returns the histogram of a replica's apply lag.
func newApplyLag() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "pagewire_replica_apply_lag_seconds",
		Help:    "Time from a transaction's commit on the primary to its being visible on this replica (the nodes' clocks must agree).",
		Buckets: []float64{.0005, .001, .0015, .002, .003, .004, .005, .0075, .01, .015, .02, .03, .05, .1, .25, 1, 5},
	})
}

// holdWriter holds the write lock of db for a halt lock (server.Config's
// HoldWriter).
func (n *node) holdWriter(ctx context.Context, db string, wait time.Duration) (engine.HeldWriter, error) {
	if n.external {
		return nil, fmt.Errorf("%w: halt locks are taken through the node's own mount, and this node runs with -external-fuse", pagewire.ErrBusy)
	}
	w, err := n.openWriter(ctx, filepath.Join(n.cfg.FUSE.Dir, db))
	if err != nil {
		return nil, err
	}
	if err := w.Hold(ctx, wait); err != nil {
		return nil, err
	}
	return w, nil
}

// following is the newest follower's status of each database
// (server.Config's Following).
func (n *node) following() map[string]server.FollowStatus {
	f := n.current.Load()
	if f == nil {
		return nil
	}
	out := map[string]server.FollowStatus{}
	for db, st := range f.Status() {
		out[db] = server.FollowStatus{PrimaryTXID: st.PrimaryTXID, Lag: st.Lag}
	}
	return out
}

// handoff hands the Consul lease to target (server.Config's Handoff).
func (n *node) handoff(ctx context.Context, target string) (string, string, error) {
	h, err := n.manager.Handoff(ctx, target)
	if errors.Is(err, roles.ErrNotPrimary) {
		_, ro := n.store.Role()
		err = fmt.Errorf("%w; the primary is %q (%s)", err, ro.Primary, ro.AdvertiseURL)
	}
	return h.Hostname, h.AdvertiseURL, err
}

// newMount builds the FUSE mount on fuse.dir, served by the storage
// server; run mounts it. With -external-fuse there is none.
func (n *node) newMount() error {
	if n.external {
		return nil
	}
	mcfg := fusemount.DefaultConfig()
	mcfg.Dir, mcfg.AllowOther, mcfg.Debug, mcfg.Logger, mcfg.Registry = n.cfg.FUSE.Dir, n.cfg.FUSE.AllowOther, n.cfg.FUSE.Debug, n.log, n.reg
	mcfg.Storage = storagev1.NewStorageServiceClient(n.srv.Conn())
	mnt, err := fusemount.New(mcfg)
	if err != nil {
		return fmt.Errorf("mount FUSE: %w", err)
	}
	n.mnt = mnt
	return nil
}

// run runs the storage server and the mount, and once the mount is
// ready, the rest of the node; it returns once every part has stopped.
// The mount stops last, after the app and replication that use it.
func (n *node) run(ctx context.Context) error {
	nodeCtx, stopNode := context.WithCancel(context.WithoutCancel(ctx))
	defer stopNode()
	g, gctx := errgroup.WithContext(nodeCtx)
	n.g, n.stop = g, stopNode

	// The mount outlives what uses it: the app and the apply worker stop
	// first, so that they never find it gone (and a node never waits on its
	// own mount while it stops).
	mntCtx, stopMount := context.WithCancel(context.Background())
	defer stopMount()
	n.goPart("the storage server", func() error { return n.srv.Run(gctx) })
	if n.mnt != nil {
		n.goPart("the mount", func() error { return n.mnt.Run(mntCtx) })
	}
	if n.uploader != nil {
		n.goPart("the backup", func() error { return n.uploader.Run(gctx) })
	}
	g.Go(func() error {
		<-gctx.Done()
		n.users.Wait()
		stopMount()
		return nil
	})

	// The rest starts once the mount is ready.
	n.users.Add(1)
	n.goPart("the node's start", func() error {
		defer n.users.Done()
		return n.start(gctx)
	})
	if err := g.Wait(); err != nil {
		return err
	}
	return n.appErr
}

// goPart runs a part of the node in the group. A panic in it becomes its
// error, logged with its stack: the node stops as for any part's failure
// (the mount last), rather than die with its mount left behind. The
// parts recover their own goroutines' panics the same way.
func (n *node) goPart(what string, run func() error) {
	n.g.Go(func() error { return safego.Call(n.log, what, run) })
}

// start waits for the mount, then starts the proxy, replication and the
// app, in that order, and runs until the app is done or a signal comes.
func (n *node) start(ctx context.Context) error {
	if !n.waitReady(ctx) {
		return nil
	}
	n.srv.SetReady(true)
	n.startProxy(ctx)
	if err := n.startReplication(ctx); err != nil {
		n.stop()
		return err
	}
	n.runApp(ctx)
	return nil
}

// waitReady waits for the mount. It reports false if the node stops
// first; a signal stops it.
func (n *node) waitReady(ctx context.Context) bool {
	var ready <-chan struct{}
	if n.mnt != nil {
		ready = n.mnt.Ready()
	} else { // -external-fuse: ready at once
		c := make(chan struct{})
		close(c)
		ready = c
	}
	select {
	case <-ready:
	case <-n.sigs:
		n.log.Info("stopping before the node was ready")
		n.stop()
		return false
	case <-ctx.Done():
		return false
	}
	select {
	case <-n.sigs:
		n.log.Info("stopping before the node was ready")
		n.stop()
		return false
	default:
		return true
	}
}

// startProxy runs the proxy and a static primary's conflict check, if
// the node has them.
func (n *node) startProxy(ctx context.Context) {
	if n.prx != nil {
		n.goPart("the proxy", func() error { return n.prx.Run(ctx) })
	}
	if n.conflict != nil {
		n.goPart("the static lease's conflict check", func() error { return n.conflict.Run(ctx) })
	}
}

// startReplication starts the apply worker, then what keeps the role:
// roles.Manager, a static replica's follower, or nothing on a static
// primary. The worker stops once that returns.
func (n *node) startReplication(ctx context.Context) error {
	if n.external {
		// A static primary: nothing to apply, no lock to hold (halt
		// refuses); replicate waits for the node to stop.
		n.users.Add(1)
		n.goPart("replication", func() error {
			defer n.users.Done()
			return n.replicate(ctx)
		})
		return nil
	}
	// A replica applies, and a primary holds its write lock for halt
	// locks, through a worker process: a node must never wait on its
	// own mount.
	worker, err := startApplyWorker(n.log)
	if err != nil {
		return err
	}
	n.mnt.Trust(worker.cmd.Process.Pid)
	n.applier.Store(worker.client)
	n.goPart("the apply worker's watch", func() error { return worker.watch(ctx) })
	n.users.Add(1)
	n.goPart("replication", func() error {
		defer n.users.Done()
		defer func() { // even after a panic: the group waits for the worker
			worker.stop()
			<-worker.exited
		}()
		return n.replicate(ctx)
	})
	return nil
}

// replicate keeps the role until ctx is done.
func (n *node) replicate(ctx context.Context) error {
	switch {
	case n.manager != nil:
		return n.manager.Run(ctx)
	case n.replica != nil:
		return n.replica.Run(ctx)
	}
	<-ctx.Done()
	return nil
}

// runApp runs the exec commands and the app, then stops the node,
// handing the lease off first. Without an app, it waits for a signal.
func (n *node) runApp(ctx context.Context) {
	role, _ := n.store.Role()
	mount := n.cfg.FUSE.Dir
	if n.external {
		mount = "none here (-external-fuse): pagewire fuse mounts " + n.cfg.Data.StorageSocketPath()
	}
	n.log.Info("node ready", logkey.Role, role.String(), "mount", mount)
	if (len(n.app) > 0 || len(n.cfg.Exec) > 0) && !n.waitPrimaryKnown(ctx) {
		handOff(n.manager, n.log)
		n.stop()
		return
	}
	n.appErr = runApps(ctx, n.cfg, n.app, n.sigs, n.log)
	if n.appErr != nil || len(n.app) > 0 || len(n.cfg.Exec) > 0 {
		handOff(n.manager, n.log)
		n.stop() // the app is done: so is the node
		return
	}
	select {
	case <-n.sigs:
	case <-ctx.Done():
	}
	n.log.Info("stopping")
	handOff(n.manager, n.log)
	n.stop()
}

// waitPrimaryKnown waits until this node is the primary or knows which
// node is, as LiteFS waits to be "connected to cluster" before exec: a
// migration or an app never starts on a node that cannot tell where writes
// go. A static lease knows at once; a Consul lease once it is read. It
// reports false if the node stops first; a signal stops it.
func (n *node) waitPrimaryKnown(ctx context.Context) bool {
	logged := false
	for {
		changed := n.store.RoleChanged()
		if role, ro := n.store.Role(); role == pagewire.RolePrimary || ro.Primary != "" {
			if logged {
				n.log.Info("connected to the cluster; running exec", logkey.Primary, cmp.Or(ro.Primary, n.info.Hostname))
			}
			return true
		}
		if !logged {
			n.log.Info("waiting to be the primary or to know it before running exec")
			logged = true
		}
		select {
		case <-changed:
		case <-n.sigs:
			n.log.Info("stopping before a primary was known")
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// closeBackup closes the backup's bucket, if open.
func (n *node) closeBackup() {
	if n.bucket != nil {
		n.bucket.Close()
	}
}
