package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/engine"
	"github.com/pagewire/pagewire/inproc"
	"github.com/pagewire/pagewire/internal/bufpool"
	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/internal/safego"
	"github.com/pagewire/pagewire/internal/wire"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
)

// NodeInfo is who this node is.
type NodeInfo struct {
	Hostname     string
	AdvertiseURL string
	Version      string
	// ID is random for each run of the node (GetNode's node_id); empty:
	// New picks one.
	ID string
}

// Config configures a Server.
type Config struct {
	Store    *engine.Store // required
	Node     NodeInfo      // Hostname required
	Listener net.Listener  // http.addr, opened by the caller; nil: serve only in process
	Logger   *slog.Logger  // nil: slog.Default()
	// Registry is where the server registers its metrics and what /metrics
	// serves; nil: a new registry.
	Registry *prometheus.Registry
	// ShutdownTimeout bounds a graceful stop before connections are cut.
	ShutdownTimeout time.Duration
	// Heartbeat is how often idle replication streams send a heartbeat.
	Heartbeat time.Duration
	// PruneInterval is how often transaction logs drop records past
	// data.retention.
	PruneInterval time.Duration
	// LeaseProblem, if set, says what is wrong with the lease's backend
	// ("" when nothing is); /healthz reports it.
	LeaseProblem func() string
	// Handoff, if set, hands the lease off (the Handoff RPC): it returns
	// the new primary, or an error. Nil: the lease cannot be handed off
	// (a static lease).
	Handoff func(ctx context.Context, target string) (hostname, url string, err error)
	// HoldWriter, if set, holds a database's WAL write lock on this node's
	// mount (the apply worker), waiting at most wait: how the primary
	// keeps its writers out while a replica's client holds the halt lock.
	// Nil: replicas' halt requests are refused.
	HoldWriter engine.HoldFunc
	// Following, if set, reports this replica's view of the primary per
	// database (litefs_db_position_primary, litefs_lag_seconds).
	Following func() map[string]FollowStatus
	// Backup, if set, reports a database's backup, when this node uploads
	// it (GET /api/v1/dbs, GetDatabase, ListDatabases).
	Backup func(db string) (BackupStatus, bool)
	// StorageSocket, if set, is a unix socket path to serve StorageService
	// on (mode 0600), for a mount in another process. StorageService is
	// never served on Listener: it is the node's own mount's protocol, and
	// it could delete or rewrite a database past the commit rules.
	StorageSocket string
	// ProxyURL is the URL of this node's HTTP proxy, "" without one
	// (GetNode's proxy_url, where replicas forward writes).
	ProxyURL string
	// Auth says who may call the port; without tokens, anyone who can
	// reach it.
	Auth Auth
	// TLS, if set, puts TLS on the port (tlsfiles.Files.Server).
	TLS *tls.Config
	// Credentials are what this node shows the nodes it calls (a replica
	// forwarding a halt lock holder's writes to its primary).
	Credentials wire.Credentials
	// ServeStorage serves StorageService on Listener too, for a mount on
	// another host. It needs Auth tokens: the block protocol can rewrite
	// or delete any database.
	ServeStorage bool
	// Limits bound what the network's clients can hold on Listener;
	// DefaultConfig sets DefaultLimits.
	Limits Limits
}

// BackupStatus is how far a database's backup has come.
type BackupStatus struct {
	TXID    pagewire.TXID // the newest transaction in the backup
	Time    time.Time     // its commit time
	Lag     time.Duration // how long the oldest transaction not in the backup has waited
	Err     string        // the last upload's error, until one succeeds
	Segment string        // the segment this node uploads
}

// FollowStatus is a replica's view of one database on the primary.
type FollowStatus struct {
	PrimaryTXID pagewire.TXID // the highest TXID the primary is known to have
	Lag         time.Duration // how far behind the primary, in time
}

// DefaultConfig returns a Config with every optional value set.
func DefaultConfig() Config {
	return Config{ShutdownTimeout: 5 * time.Second, Heartbeat: time.Second, PruneInterval: 5 * time.Second, Limits: DefaultLimits()}
}

// Validate reports the first missing or bad value.
func (c Config) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("server: Store is required")
	case c.Node.Hostname == "":
		return errors.New("server: Node.Hostname is required")
	case c.ShutdownTimeout <= 0:
		return errors.New("server: ShutdownTimeout must be > 0")
	case c.Heartbeat <= 0:
		return errors.New("server: Heartbeat must be > 0")
	case c.PruneInterval <= 0:
		return errors.New("server: PruneInterval must be > 0")
	case c.ServeStorage && len(c.Auth.Tokens) == 0:
		return errors.New("server: ServeStorage needs Auth.Tokens: the block protocol can rewrite or delete any database")
	}
	for _, t := range c.Auth.Tokens {
		if t == "" {
			return errors.New("server: an Auth token is empty")
		}
	}
	return c.Limits.validate()
}

// Server is a node's gRPC and HTTP front: StorageService and AdminService,
// health and reflection, and the HTTP API, on one listener; and the same
// storage service on an in-process channel for the mount.
type Server struct {
	cfg    Config
	log    *slog.Logger
	gs     *grpc.Server
	health *health.Server
	inproc *inproc.Channel
	http   *http.Server
	// storage serves StorageService on cfg.StorageSocket; nil without one.
	storage *grpc.Server
	// conns is cfg.Listener within cfg.Limits; nil without a listener.
	conns *connLimiter
	// stopping is closed when Run begins to stop: long streams end.
	stopping chan struct{}
	halts    *engine.Halts
	subs     *subscribers
	auth     *authenticator
	admin    *adminService // the HTTP API calls it: one implementation, two faces
	// tasks run in the background while Run serves.
	tasks []task
}

// task is work that runs until its ctx is done.
type task struct {
	what string // for the log
	run  func(ctx context.Context)
}

// New builds the server; it serves nothing until Run.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With(logkey.Component, "server")
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Node.ID == "" {
		cfg.Node.ID = NewNodeID()
	}
	s := &Server{cfg: cfg, log: log, stopping: make(chan struct{})}
	s.tasks = []task{{"prune transaction logs", s.prune}, {"follow the role", s.followRole}}

	// The engine's halt locks, and who streams from this node.
	s.halts = engine.NewHalts(cfg.Store, cfg.Node.Hostname, cfg.HoldWriter, newHaltPrimary(cfg.Credentials), log)
	s.auth = newAuthenticator(cfg.Auth)
	s.subs = newSubscribers(cfg.Store.ForgetReplica)

	// Metrics, then the gRPC server and the in-process channel.
	grpcMetrics := grpcprom.NewServerMetrics()
	cfg.Registry.MustRegister(grpcMetrics, s.auth.failures, newStoreCollector(cfg.Store, s.halts, s.subs, cfg.Following))
	s.gs, s.inproc, s.storage = newGRPC(log, grpcMetrics, s.auth, cfg.StorageSocket != "", cfg.Limits.grpcOptions()...)

	// The services, on both.
	s.registerServices()
	grpcMetrics.InitializeMetrics(s.gs)

	// The HTTP API, on the same port, whose connections are limited.
	s.http = &http.Server{Handler: s.handler()}
	cfg.Limits.apply(s.http)
	if cfg.Listener != nil {
		s.conns = newConnLimiter(cfg.Listener, cfg.Limits, log, cfg.Registry)
	}
	s.http.Protocols = new(http.Protocols)
	s.http.Protocols.SetHTTP1(true)
	s.http.Protocols.SetUnencryptedHTTP2(true) // h2c: gRPC clients speak it with prior knowledge
	return s, nil
}

// newGRPC builds the gRPC server for the network, with metrics, auth, logs
// and panic recovery on every call and netOpts (Limits); the in-process
// channel the mount calls; and, if storageSocket, the server for the
// storage socket.
//
// Calls refused for their token are counted but not logged: a flood of
// them must not flood the log.
//
// The mount's calls, in process or over the socket, skip the logging
// interceptor: they are every page read and write, and errors reach the
// mount, which logs them. They are counted like network calls, so a bench
// can count calls per transaction.
func newGRPC(log *slog.Logger, grpcMetrics *grpcprom.ServerMetrics, auth *authenticator, storageSocket bool, netOpts ...grpc.ServerOption) (gs *grpc.Server, ch *inproc.Channel, storage *grpc.Server) {
	// A handler's panic fails its call with INTERNAL, logged with its
	// stack; the node serves on.
	recoverPanic := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		task := "a gRPC handler" // in process: the stack names it
		if method, ok := grpc.Method(ctx); ok {
			task = "gRPC handler " + method
		}
		safego.Recovered(log, task, p)
		return status.Errorf(codes.Internal, "internal error: %v", p)
	})

	// Successful calls log at debug level only.
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(func(c codes.Code) logging.Level {
			if c == codes.OK {
				return logging.LevelDebug
			}
			return logging.DefaultServerCodeToLevel(c)
		}),
	}
	gs = pooledServer(append(netOpts,
		grpc.ChainUnaryInterceptor(
			grpcMetrics.UnaryServerInterceptor(),
			auth.unary,
			logging.UnaryServerInterceptor(slogAdapter(log), logOpts...),
			limitUnary,
			recovery.UnaryServerInterceptor(recoverPanic),
		),
		grpc.ChainStreamInterceptor(
			grpcMetrics.StreamServerInterceptor(),
			auth.stream,
			logging.StreamServerInterceptor(slogAdapter(log), logOpts...),
			limitStream,
			recovery.StreamServerInterceptor(recoverPanic),
		),
	)...)

	// The mount's: metrics and recovery only.
	ch = inproc.New(inproc.Config{
		Unary:  chainUnary(grpcMetrics.UnaryServerInterceptor(), recovery.UnaryServerInterceptor(recoverPanic)),
		Stream: chainStream(grpcMetrics.StreamServerInterceptor(), recovery.StreamServerInterceptor(recoverPanic)),
		Logger: log,
	})
	if storageSocket {
		storage = pooledServer(
			grpc.ChainUnaryInterceptor(grpcMetrics.UnaryServerInterceptor(), limitUnary, recovery.UnaryServerInterceptor(recoverPanic)),
			grpc.ChainStreamInterceptor(grpcMetrics.StreamServerInterceptor(), limitStream, recovery.StreamServerInterceptor(recoverPanic)),
		)
	}
	return gs, ch, storage
}

// pooledServer is a gRPC server whose buffers come from a pool and are not
// zeroed, with the given interceptors.
func pooledServer(opts ...grpc.ServerOption) *grpc.Server {
	pool := bufpool.New()
	return grpc.NewServer(append([]grpc.ServerOption{
		experimental.BufferPool(pool),
		grpc.ForceServerCodecV2(bufpool.NewCodec(pool)),
		// The largest message any method takes (a halt lock holder's
		// transaction); each method's own limit is in limits.go.
		grpc.MaxRecvMsgSize(wire.MaxForwardMessageBytes),
	}, opts...)...)
}

// registerServices registers the services: storage, admin, replication,
// health and reflection on the network; storage (taking the node's own
// writes) and admin in process.
func (s *Server) registerServices() {
	cfg := s.cfg
	admin := &adminService{store: cfg.Store, node: cfg.Node, handoff: cfg.Handoff, halts: s.halts, subs: s.subs, proxyURL: cfg.ProxyURL, backup: cfg.Backup}
	s.admin = admin
	// The block protocol: in process, and on the owner-only socket, whose
	// clients are this node's mounts as much as the in-process one is.
	// One mount session for all of them.
	storage := &storageService{store: cfg.Store, allowInternal: true, mounts: &mountSession{}}
	storagev1.RegisterStorageServiceServer(s.inproc, storage)
	if s.storage != nil {
		storagev1.RegisterStorageServiceServer(s.storage, storage)
		reflection.Register(s.storage)
	}
	if cfg.ServeStorage {
		storagev1.RegisterStorageServiceServer(s.gs, storage)
	}
	adminv1.RegisterAdminServiceServer(s.gs, admin)
	adminv1.RegisterAdminServiceServer(s.inproc, admin)
	replicationv1.RegisterReplicationServiceServer(s.gs, &replicationService{store: cfg.Store, node: cfg.Node, heartbeat: cfg.Heartbeat, log: s.log, stopping: s.stopping,
		subs: s.subs, halts: s.halts})
	s.health = health.NewServer()
	s.health.SetServingStatus("", healthgrpc.HealthCheckResponse_NOT_SERVING)
	healthgrpc.RegisterHealthServer(s.gs, s.health)
	reflection.Register(s.gs)
}

// PrimaryHealthService is the gRPC health service name that is SERVING on
// the primary only: a load balancer or grpcurl can find the primary with
// it (`grpc.health.v1.Health/Check {"service": "pagewire.primary"}`).
const PrimaryHealthService = "pagewire.primary"

// followRole keeps PrimaryHealthService in step with the node's role until
// ctx is done.
func (s *Server) followRole(ctx context.Context) {
	for {
		changed := s.cfg.Store.RoleChanged()
		st := healthgrpc.HealthCheckResponse_NOT_SERVING
		if role, _ := s.cfg.Store.Role(); role == pagewire.RolePrimary {
			st = healthgrpc.HealthCheckResponse_SERVING
		} else {
			s.halts.ReleaseAll("this node is no longer the primary")
		}
		s.health.SetServingStatus(PrimaryHealthService, st)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// IsReplica reports whether a replica follows this node from addr now: it
// has a WatchDatabases stream open from that address. The proxy trusts the
// X-Forwarded-* headers of writes forwarded from there.
func (s *Server) IsReplica(addr netip.Addr) bool {
	return s.subs.watchedFrom(addr.Unmap().WithZone(""))
}

// Conn is an in-process connection to this server's services.
func (s *Server) Conn() grpc.ClientConnInterface { return s.inproc }

// SetReady marks the node ready: health turns SERVING.
func (s *Server) SetReady(ready bool) {
	st := healthgrpc.HealthCheckResponse_NOT_SERVING
	if ready {
		st = healthgrpc.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
}

// Ready reports whether the node is ready.
func (s *Server) Ready() bool {
	resp, err := s.health.Check(context.Background(), &healthgrpc.HealthCheckRequest{})
	return err == nil && resp.GetStatus() == healthgrpc.HealthCheckResponse_SERVING
}

// handler splits the port: gRPC (HTTP/2 with a grpc content type) goes to
// the gRPC server, everything else to the HTTP API.
func (s *Server) handler() http.Handler {
	api := recoverHTTP(s.log, s.auth.http(s.apiMux()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			// A gRPC call on a connection the splitter gave to HTTP (its
			// first request was not gRPC) may be a long stream: the API's
			// read and write timeouts are not for it.
			rc := http.NewResponseController(w)
			_ = rc.SetReadDeadline(time.Time{})
			_ = rc.SetWriteDeadline(time.Time{})
			s.gs.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}

// Run serves until ctx is done, then stops gracefully within
// ShutdownTimeout. It returns nil on cancellation, and an error if serving
// fails or a background loop panics: the node then stops.
func (s *Server) Run(ctx context.Context) error {
	// Background work until Run returns: pruning transaction logs,
	// following the role, the storage socket. A panic there (or the socket
	// failing) ends Run with the error, so that the node stops instead of
	// running on without it.
	bgCtx, stopBg := context.WithCancel(ctx)
	var bg sync.WaitGroup
	failed := make(chan error, len(s.tasks)+1) // each task, the socket: one error each at most
	for _, t := range s.tasks {
		s.background(bgCtx, &bg, failed, t.what, t.run)
	}
	defer bg.Wait()
	defer stopBg()
	defer s.halts.Close()

	// The storage socket, for mounts in other processes.
	if s.storage != nil {
		stop, err := s.serveStorageSocket(failed)
		if err != nil {
			return err
		}
		defer stop()
	}

	// In process only: nothing to serve on the network.
	if s.cfg.Listener == nil {
		var err error
		select {
		case <-ctx.Done():
		case err = <-failed:
			s.log.Error("a background task failed; stopping the node", logkey.Error, err)
		}
		close(s.stopping)
		s.health.Shutdown()
		s.gs.Stop()
		return err
	}

	// gRPC and HTTP on one port, until one fails or ctx is done.
	var ln net.Listener = s.conns
	if s.cfg.TLS != nil {
		// Each connection's handshake runs in the splitter's first read
		// of it, under its deadline; the limits count TCP connections.
		ln = tls.NewListener(ln, s.cfg.TLS)
	}
	split := newPortSplitter(ln, s.cfg.Limits.HandshakeTimeout, s.log)
	errc := make(chan error, 3)
	serve := func(what string, f func() error) {
		go func() { errc <- safego.Call(s.log, what, f) }()
	}
	serve("split the port", split.run)
	serve("serve gRPC", func() error { return s.gs.Serve(split.grpc) })
	serve("serve HTTP", func() error { return s.http.Serve(split.http) })
	var err error
	select {
	case err = <-errc:
		err = fmt.Errorf("serve %s: %w", s.cfg.Listener.Addr(), err)
		s.log.Error("serving stopped; stopping the node", logkey.Error, err)
	case err = <-failed:
		s.log.Error("a background task failed; stopping the node", logkey.Error, err)
	case <-ctx.Done():
	}

	// Streams end first (replicas reconnect elsewhere or later), then
	// calls in flight get ShutdownTimeout to finish.
	close(s.stopping)
	s.health.Shutdown()
	_ = s.cfg.Listener.Close()
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		s.gs.GracefulStop()
		close(stopped)
	}()
	if herr := s.http.Shutdown(sctx); herr != nil {
		_ = s.http.Close()
	}
	select {
	case <-stopped:
	case <-sctx.Done():
		s.gs.Stop()
		<-stopped
	}
	return err
}

// background runs f until ctx is done, in a goroutine counted by wg; a
// panic in f goes to failed.
func (s *Server) background(ctx context.Context, wg *sync.WaitGroup, failed chan<- error, what string, f func(context.Context)) {
	wg.Go(func() {
		if err := safego.Call(s.log, what, func() error { f(ctx); return nil }); err != nil {
			failed <- err
		}
	})
}

// prune drops transaction log records past data.retention every
// PruneInterval until ctx is done.
func (s *Server) prune(ctx context.Context) {
	t := time.NewTicker(s.cfg.PruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.cfg.Store.Prune(now)
		}
	}
}

// chainUnary makes one interceptor of two, outer first.
func chainUnary(outer, inner grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		return outer(ctx, req, info, func(ctx context.Context, req any) (any, error) {
			return inner(ctx, req, info, h)
		})
	}
}

// chainStream makes one stream interceptor of two, outer first.
func chainStream(outer, inner grpc.StreamServerInterceptor) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return outer(srv, ss, info, func(srv any, ss grpc.ServerStream) error {
			return inner(srv, ss, info, h)
		})
	}
}

// slogAdapter lets go-grpc-middleware's logging interceptor log with slog.
func slogAdapter(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// serveStorageSocket serves StorageService on cfg.StorageSocket, a unix
// socket only its owner may connect to, until the returned stop is called.
// If serving fails before then, the error goes to failed: the mounts that
// use the socket could do nothing more.
func (s *Server) serveStorageSocket(failed chan<- error) (stop func(), err error) {
	path := s.cfg.StorageSocket
	// A socket left by a node that did not stop cleanly; data.dir's lock
	// says no other node runs here.
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("data.storage-socket %q exists and is not a socket: remove it or set data.storage-socket to another path", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove the old storage socket %q: %w", path, err)
		}
	}

	// Owner-only. Connecting to a unix socket takes write permission on
	// it, which a usual umask (022) already denies group and others from
	// the moment it exists; chmod makes it 0600 whatever the umask.
	// (Binding in a private folder and renaming would make the path
	// longer than the 107 bytes a socket path may have.)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("serve the storage socket %q: %w; set data.storage-socket to a path this user can create", path, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false) // stop removes it
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		_ = os.Remove(path)
		return nil, fmt.Errorf("make the storage socket %q owner-only: %w", path, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := safego.Call(s.log, "serve the storage socket", func() error { return s.storage.Serve(ln) }); err != nil {
			failed <- fmt.Errorf("serve the storage socket %q: %w", path, err)
		}
	}()
	s.log.Info("serving the block protocol on a unix socket for mounts in other processes", logkey.Path, path)
	return func() {
		s.storage.Stop()
		<-done
		_ = os.Remove(path)
	}, nil
}
