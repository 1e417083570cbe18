package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/pagewire/pagewire"
	client "github.com/pagewire/pagewire/clients/go"
	"github.com/pagewire/pagewire/config"
	"github.com/pagewire/pagewire/engine"
	"github.com/pagewire/pagewire/fusemount"
	"github.com/pagewire/pagewire/leaser"
	"github.com/pagewire/pagewire/leaser/consul"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
	"github.com/pagewire/pagewire/proxy"
	"github.com/pagewire/pagewire/replicator"
	"github.com/pagewire/pagewire/replicator/upstream"
	"github.com/pagewire/pagewire/roles"
	"github.com/pagewire/pagewire/server"
)

// runMount runs every part of a node until ctx is done or the app exits.
func runMount(ctx context.Context, args []string) error {
	// Signals from here on stop the node, even one that arrives during
	// start-up; once the app runs they go to the app.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	fset := flag.NewFlagSet("mount", flag.ContinueOnError)
	configPath := fset.String("config", "", "config file (default: ./pagewire.yml, ./litefs.yml, /etc/pagewire.yml, /etc/litefs.yml, else the embedded single-node default)")
	if err := fset.Parse(args); err != nil {
		return errUsage
	}
	cfg, source, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log)
	for _, ig := range cfg.Ignored {
		log.Warn("ignoring a LiteFS config key pagewire does not use", "key", ig.Key, "line", ig.Line, "config", source)
	}
	log.Info("starting pagewire", "version", Version, "config", source, "fuse.dir", cfg.FUSE.Dir, "data.dir", cfg.Data.Dir, "http.addr", cfg.HTTP.Addr)

	argv := fset.Args()
	var app []string
	if len(argv) > 0 {
		app = argv
	}

	// With a static lease, a replica's lease.hostname and advertise-url are
	// the primary's (as LiteFS); the node itself goes by the host's name.
	// With a Consul lease they are this node's.
	node := server.NodeInfo{Hostname: cfg.Lease.Hostname, AdvertiseURL: cfg.Lease.AdvertiseURL, Version: Version, ID: server.NewNodeID()}
	dynamic := cfg.Lease.Type == config.LeaseTypeConsul
	if (!cfg.Lease.Candidate && !dynamic) || node.Hostname == "" {
		// $HOSTNAME first: Docker and Fly set it to the machine's name.
		if h := os.Getenv("HOSTNAME"); h != "" {
			node.Hostname = h
		} else if h, err := os.Hostname(); err == nil {
			node.Hostname = h
		}
		if !dynamic {
			node.AdvertiseURL = ""
		}
	}
	if dynamic && node.AdvertiseURL == "" {
		return errors.New("lease.advertise-url is required with lease.type consul: the URL other nodes reach this node's API at (on Fly.io: http://${FLY_ALLOC_ID}.vm.${FLY_APP_NAME}.internal:20202)")
	}

	storeCfg := engine.DefaultStoreConfig()
	storeCfg.Dir, storeCfg.Logger = cfg.Data.Dir, log
	if r := time.Duration(cfg.Data.Retention); r > 0 {
		storeCfg.Retention = r
	}
	store, err := engine.OpenStore(storeCfg)
	if err != nil {
		return err
	}
	defer store.Close()
	// Set once the apply worker runs: it applies a replica's transactions,
	// and holds the primary's write lock for halt locks.
	var workerClient atomic.Pointer[replicator.ApplyClient]
	openWriter := func(ctx context.Context, path string) (*replicator.RemoteWALWriter, error) {
		c := workerClient.Load()
		if c == nil {
			return nil, fmt.Errorf("%w: the node is starting; try again", pagewire.ErrBusy)
		}
		return c.Open(ctx, path)
	}
	var current atomic.Pointer[follower] // the replica's newest follower
	applyLag := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "pagewire_replica_apply_lag_seconds",
		Help:    "Time from a transaction's commit on the primary to its being visible on this replica (the nodes' clocks must agree).",
		Buckets: []float64{.0005, .001, .0015, .002, .003, .004, .005, .0075, .01, .015, .02, .03, .05, .1, .25, 1, 5},
	})
	// newFollower makes a replica of the primary at url.
	newFollower := func(url string, minEpoch pagewire.Epoch) (*follower, error) {
		conn, err := client.Dial(url)
		if err != nil {
			return nil, err
		}
		rcfg := replicator.DefaultReplicaConfig()
		rcfg.OpenWriter = func(ctx context.Context, path string) (replicator.Writer, error) { return openWriter(ctx, path) }
		rcfg.Upstream, rcfg.Local, rcfg.MountDir, rcfg.Hostname, rcfg.Logger = upstream.New(conn), store, cfg.FUSE.Dir, node.Hostname, log
		rcfg.MinEpoch = minEpoch
		rcfg.Applied = func(lag time.Duration) { applyLag.Observe(lag.Seconds()) }
		r, err := replicator.NewReplica(rcfg)
		if err != nil {
			conn.Close()
			return nil, err
		}
		f := &follower{Replica: r, conn: conn}
		current.Store(f)
		return f, nil
	}
	var replica *follower // a static replica's
	var manager *roles.Manager
	var conflict *staticConflict // a static primary's check for another
	switch {
	case dynamic:
		ccfg := consul.DefaultConfig()
		ccfg.URL, ccfg.Key = cfg.Lease.Consul.URL, cfg.Lease.Consul.Key
		ccfg.TTL, ccfg.LockDelay = time.Duration(cfg.Lease.Consul.TTL), time.Duration(cfg.Lease.Consul.LockDelay)
		ccfg.Candidate, ccfg.Node, ccfg.Logger = cfg.Lease.Candidate, leaser.Info{Hostname: node.Hostname, AdvertiseURL: node.AdvertiseURL}, log
		lsr, err := consul.New(ccfg)
		if err != nil {
			return err
		}
		rcfg := roles.DefaultConfig()
		rcfg.Leaser, rcfg.Store, rcfg.Candidate, rcfg.Logger = lsr, store, cfg.Lease.Candidate, log
		rcfg.Hostname, rcfg.Positions, rcfg.DemoteDelay = node.Hostname, storePositions(store), time.Duration(cfg.Lease.DemoteDelay)
		rcfg.Follow = func(h leaser.Holder) (roles.Follower, error) { return newFollower(h.AdvertiseURL, h.Epoch) }
		if cfg.Lease.Promote {
			rcfg.Promote = func(ctx context.Context, h leaser.Holder) error { return promote(ctx, h, node.Hostname, store, log) }
		}
		manager, err = roles.New(rcfg)
		if err != nil {
			return err
		}
		store.SetRole(pagewire.RoleReplica, pagewire.ReadOnlyError{}, 0)
	case cfg.Lease.Candidate:
		store.SetRole(pagewire.RolePrimary, pagewire.ReadOnlyError{}, 1)
		if cfg.Lease.AdvertiseURL != "" {
			conflict = &staticConflict{url: cfg.Lease.AdvertiseURL, selfID: node.ID, store: store, log: log}
		}
	default:
		store.SetRole(pagewire.RoleReplica, pagewire.ReadOnlyError{Primary: cfg.Lease.Hostname, AdvertiseURL: cfg.Lease.AdvertiseURL}, 1)
		if replica, err = newFollower(cfg.Lease.AdvertiseURL, 1); err != nil {
			return fmt.Errorf("lease.advertise-url: %w", err)
		}
	}

	lis, err := net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("listen on http.addr %q: %w; is another node running? change http.addr", cfg.HTTP.Addr, err)
	}
	scfg := server.DefaultConfig()
	reg := prometheus.NewRegistry()
	// go_* and process_* beside ours, as LiteFS has them; the scheduler's
	// (go_sched_gomaxprocs_threads, go_sched_latencies_seconds) show
	// whether goroutines wait for a CPU (see fusemount's procs.go).
	reg.MustRegister(
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsGC, collectors.MetricsScheduler)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	scfg.Store, scfg.Listener, scfg.Logger, scfg.Registry = store, lis, log, reg
	reg.MustRegister(applyLag)
	scfg.Node = node
	scfg.HoldWriter = func(ctx context.Context, db string, wait time.Duration) (engine.HeldWriter, error) {
		w, err := openWriter(ctx, filepath.Join(cfg.FUSE.Dir, db))
		if err != nil {
			return nil, err
		}
		if err := w.Hold(ctx, wait); err != nil {
			return nil, err
		}
		return w, nil
	}
	scfg.Following = func() map[string]server.FollowStatus {
		f := current.Load()
		if f == nil {
			return nil
		}
		out := map[string]server.FollowStatus{}
		for db, st := range f.Status() {
			out[db] = server.FollowStatus{PrimaryTXID: st.PrimaryTXID, Lag: st.Lag}
		}
		return out
	}
	if conflict != nil {
		scfg.LeaseProblem = conflict.Problem
	}
	if manager != nil {
		scfg.LeaseProblem = manager.Problem
		scfg.Handoff = func(ctx context.Context, target string) (string, string, error) {
			h, err := manager.Handoff(ctx, target)
			if errors.Is(err, roles.ErrNotPrimary) {
				_, ro := store.Role()
				err = fmt.Errorf("%w; the primary is %q (%s)", err, ro.Primary, ro.AdvertiseURL)
			}
			return h.Hostname, h.AdvertiseURL, err
		}
	}
	scfg.ProxyURL = proxyURL(cfg, node.AdvertiseURL)
	var prx *proxy.Proxy
	if cfg.Proxy.Addr != "" {
		if prx, err = newProxy(cfg, node.Hostname, &proxyNode{store: store, current: &current}, log); err != nil {
			lis.Close()
			return err
		}
	}
	srv, err := server.New(scfg)
	if err != nil {
		lis.Close()
		return err
	}
	mcfg := fusemount.DefaultConfig()
	mcfg.Dir, mcfg.AllowOther, mcfg.Debug, mcfg.Logger, mcfg.Registry = cfg.FUSE.Dir, cfg.FUSE.AllowOther, cfg.FUSE.Debug, log, reg
	mcfg.Storage = storagev1.NewStorageServiceClient(srv.Conn())
	mnt, err := fusemount.New(mcfg)
	if err != nil {
		lis.Close()
		return err
	}

	nodeCtx, stopNode := context.WithCancel(context.WithoutCancel(ctx))
	defer stopNode()
	g, gctx := errgroup.WithContext(nodeCtx)
	// The mount outlives what uses it: the app and the apply worker stop
	// first, so that they never find it gone (and a node never waits on its
	// own mount while it stops).
	mntCtx, stopMount := context.WithCancel(context.Background())
	defer stopMount()
	var users sync.WaitGroup // the app and the replica, while they run
	g.Go(func() error { return srv.Run(gctx) })
	g.Go(func() error { return mnt.Run(mntCtx) })
	g.Go(func() error {
		<-gctx.Done()
		users.Wait()
		stopMount()
		return nil
	})
	var appErr error
	users.Add(1)
	g.Go(func() error {
		defer users.Done()
		select {
		case <-mnt.Ready():
		case <-sigs:
			log.Info("stopping before the node was ready")
			stopNode()
			return nil
		case <-gctx.Done():
			return nil
		}
		select {
		case <-sigs:
			log.Info("stopping before the node was ready")
			stopNode()
			return nil
		default:
		}
		srv.SetReady(true)
		if prx != nil {
			g.Go(func() error { return prx.Run(gctx) })
		}
		if conflict != nil {
			g.Go(func() error { return conflict.Run(gctx) })
		}
		// A replica applies, and a primary holds its write lock for halt
		// locks, through a worker process: a node must never wait on its
		// own mount.
		worker, err := startApplyWorker()
		if err != nil {
			stopNode()
			return err
		}
		mnt.Trust(worker.cmd.Process.Pid)
		workerClient.Store(worker.client)
		g.Go(func() error { return worker.watch(gctx) })
		users.Add(1)
		g.Go(func() error {
			defer users.Done()
			var err error
			switch {
			case manager != nil:
				err = manager.Run(gctx)
			case replica != nil:
				err = replica.Run(gctx)
			default:
				<-gctx.Done()
			}
			worker.stop()
			<-worker.exited
			return err
		})
		role, _ := store.Role()
		log.Info("node ready", "role", role.String(), "mount", cfg.FUSE.Dir)
		appErr = runApps(gctx, cfg, app, sigs, log)
		if appErr != nil || len(app) > 0 || len(cfg.Exec) > 0 {
			handOff(manager, log)
			stopNode() // the app is done: so is the node
			return nil
		}
		select {
		case <-sigs:
		case <-gctx.Done():
		}
		log.Info("stopping")
		handOff(manager, log)
		stopNode()
		return nil
	})
	err = g.Wait()
	if err != nil {
		return err
	}
	return appErr
}

// follower is a replica of one primary and its connection.
type follower struct {
	*replicator.Replica
	conn interface{ Close() error }
}

// Run replicates until ctx is done, then closes the connection.
func (f *follower) Run(ctx context.Context) error {
	defer f.conn.Close()
	return f.Replica.Run(ctx)
}

// runApps runs the exec commands and the -- command. All but the last
// command run to completion first; the last one gets forwarded signals and
// its exit code becomes pagewire's.
func runApps(ctx context.Context, cfg config.Config, app []string, sigs <-chan os.Signal, log *slog.Logger) error {
	var cmds [][]string
	for _, e := range cfg.Exec {
		if e.IfCandidate && !cfg.Lease.Candidate {
			continue
		}
		cmds = append(cmds, shellArgs(e.Cmd))
	}
	if len(app) > 0 {
		cmds = append(cmds, app)
	}
	for i, argv := range cmds {
		last := i == len(cmds)-1
		if err := runChild(ctx, argv, sigs, log); err != nil {
			var ee *exitError
			if !last && errors.As(err, &ee) {
				return fmt.Errorf("exec %q failed with exit code %d; the app was not started", strings.Join(argv, " "), ee.code)
			}
			return err
		}
	}
	return nil
}

// shellArgs runs a command line through sh only when it needs a shell.
func shellArgs(cmd string) []string {
	if strings.ContainsAny(cmd, "|&;<>()$`\\\"'*?[]#~=%{}") {
		return []string{"/bin/sh", "-c", cmd}
	}
	return strings.Fields(cmd)
}

// runChild runs one command, forwarding signals, and returns an *exitError
// for a non-zero exit.
func runChild(ctx context.Context, argv []string, sigs <-chan os.Signal, log *slog.Logger) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %q: %w", argv[0], err)
	}
	log.Info("started app", "cmd", strings.Join(argv, " "), "pid", cmd.Process.Pid)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case sig := <-sigs:
			log.Info("forwarding signal to app", "signal", sig.String())
			_ = cmd.Process.Signal(sig)
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			t := time.AfterFunc(10*time.Second, func() { _ = cmd.Process.Kill() })
			<-done
			t.Stop()
			return nil
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code := ee.ExitCode()
				if code < 0 { // killed by a signal
					code = 128 + int(ee.Sys().(syscall.WaitStatus).Signal())
				}
				log.Info("app exited", "cmd", argv[0], "code", code)
				return &exitError{code: code}
			}
			if err != nil {
				return err
			}
			log.Info("app exited", "cmd", argv[0], "code", 0)
			return nil
		}
	}
}

// loadConfig finds and loads the config, or the embedded default.
func loadConfig(explicit string) (config.Config, string, error) {
	path, err := config.Find(explicit)
	if err != nil {
		return config.Config{}, "", err
	}
	if path == "" {
		return config.Default(), "embedded default", nil
	}
	cfg, err := config.Load(path, os.Getenv)
	return cfg, path, err
}

func newLogger(c config.LogConfig) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if c.Debug {
		opts.Level = slog.LevelDebug
	}
	if c.Format == config.LogFormatJSON {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
