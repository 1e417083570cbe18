package consul

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/leaser"
)

// Config configures a Consul lease. Start from DefaultConfig and set URL
// and Node.
type Config struct {
	// URL is the Consul agent's HTTP URL (lease.consul.url, usually
	// ${FLY_CONSUL_URL}); a token may ride in it as user info or as a
	// ?token= query, as Fly's does.
	URL string
	// Key is where the lease lives (lease.consul.key); the cluster ID is
	// at Key + "/clusterid". DefaultConfig sets LiteFS's "litefs/primary".
	Key string
	// TTL is the session TTL; Consul's minimum is 10s, which DefaultConfig
	// sets.
	TTL time.Duration
	// LockDelay is how long Consul keeps a lock from being re-acquired
	// after its session is invalidated (0: not at all); DefaultConfig
	// sets 1s.
	LockDelay time.Duration
	// CheckTTL (lease.consul.check-ttl) ties the holder's session to a TTL
	// check that the node passes itself every CheckTTL/4 on the agent at
	// URL: when the node dies, the check goes critical CheckTTL after its
	// last pass and Consul invalidates the session then, instead of up to
	// twice TTL later. 0: no check (LiteFS's session: its TTL and the
	// agent's serfHealth). DefaultConfig sets 2s; otherwise at least 1s
	// and below TTL.
	CheckTTL time.Duration
	// Candidate: this node may take the lease (false: it only follows).
	Candidate bool
	// Node is this node; its Hostname is required.
	Node leaser.Info
	// Logger; nil: slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns LiteFS's defaults (the lease at "litefs/primary",
// a 10s TTL and a 1s lock-delay) and pagewire's 2s check TTL. URL and Node
// are left for the caller.
func DefaultConfig() Config {
	return Config{Key: "litefs/primary", TTL: 10 * time.Second, LockDelay: time.Second, CheckTTL: DefaultCheckTTL}
}

// DefaultCheckTTL is lease.consul.check-ttl's default: with lock-delay 1s
// a new primary can take writes about 3 s after the old one died, and the
// holder loses the lease when Consul has not answered its passes for 1.5 s.
const DefaultCheckTTL = 2 * time.Second

// MinCheckTTL is the shortest lease.consul.check-ttl: the node passes its
// check every quarter of it.
const MinCheckTTL = time.Second

// Validate reports the first bad value, naming its config key.
func (c Config) Validate() error {
	switch {
	case c.URL == "":
		return errors.New("lease.consul.url is required with lease.type consul (on Fly.io: ${FLY_CONSUL_URL})")
	case c.Key == "":
		return errors.New("lease.consul.key must not be empty")
	case c.TTL < 10*time.Second:
		return fmt.Errorf("lease.consul.ttl is %s; Consul's minimum is 10s", c.TTL)
	case c.LockDelay < 0:
		return errors.New("lease.consul.lock-delay must be >= 0")
	case c.CheckTTL != 0 && (c.CheckTTL < MinCheckTTL || c.CheckTTL >= c.TTL):
		return fmt.Errorf("lease.consul.check-ttl is %s: use 0 (no check) or from %s to below lease.consul.ttl (%s), e.g. %s", c.CheckTTL, MinCheckTTL, c.TTL, DefaultCheckTTL)
	case c.Node.Hostname == "":
		return errors.New("leaser: the node's hostname is required (lease.hostname)")
	}
	if _, err := apiConfig(c.URL); err != nil {
		return err
	}
	return nil
}

// Leaser is a lease held as a Consul session lock on Key, laid out as
// LiteFS lays it out: the value is this node's leaser.Info as JSON. It is
// also the leaser.Board where candidates publish their positions.
type Leaser struct {
	cfg Config
	c   *api.Client
	log *slog.Logger

	checkDenied atomic.Bool // the agent refused to register the check, and it was logged

	mu   sync.Mutex
	held *heldLease // the last lease taken
}

var _ leaser.Leaser = (*Leaser)(nil)

// New builds a Consul lease from a valid cfg; it connects lazily.
func New(cfg Config) (*Leaser, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	acfg, err := apiConfig(cfg.URL) // Validate parsed it once already
	if err != nil {
		return nil, err
	}
	c, err := api.NewClient(acfg)
	if err != nil {
		return nil, fmt.Errorf("lease.consul.url %q: %w", redact(cfg.URL), err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Leaser{cfg: cfg, c: c, log: log.With(logkey.Component, "leaser", logKeyKey, cfg.Key)}, nil
}

// apiConfig turns lease.consul.url into a client config.
func apiConfig(raw string) (*api.Config, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("lease.consul.url %q is not an http(s) URL with a host", redact(raw))
	}
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Scheme = u.Host, u.Scheme
	if u.User != nil {
		if p, ok := u.User.Password(); ok {
			cfg.Token = p
		} else {
			cfg.Token = u.User.Username()
		}
	}
	if t := u.Query().Get("token"); t != "" {
		cfg.Token = t
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		cfg.PathPrefix = "/" + p
	}
	return cfg, nil
}

// redact hides a token in a URL for messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable)"
	}
	if u.User != nil {
		u.User = url.User("REDACTED")
	}
	if q := u.Query(); q.Has("token") {
		q.Set("token", "REDACTED")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// Type is "consul", as in lease.type.
func (l *Leaser) Type() string { return "consul" }

// unreachable wraps an error talking to Consul with what to check.
func (l *Leaser) unreachable(op string, err error) error {
	return fmt.Errorf("%s: Consul at %s did not answer (check lease.consul.url, and FLY_CONSUL_URL on Fly.io): %w", op, redact(l.cfg.URL), err)
}

// Primary reads the lease's holder.
func (l *Leaser) Primary(ctx context.Context) (leaser.Info, error) {
	h, _, err := l.WaitPrimary(ctx, 0)
	return h.Info, err
}

// WaitPrimary blocks (a Consul blocking query) until the lease's key
// changes after index, or ctx is done. The holder's epoch is the key's
// ModifyIndex, as Acquire gave it.
//
// A query waits one TTL at most. A Consul cluster that lost its state
// (a restarted dev agent, a rebuilt cluster) counts indexes from 1 again,
// and a query waiting on an index from before only notices when its wait
// ends: with a minute-long wait a node stayed blind to the lease, new
// holders and handoffs included, for a minute.
func (l *Leaser) WaitPrimary(ctx context.Context, index uint64) (leaser.Holder, uint64, error) {
	opts := (&api.QueryOptions{WaitIndex: index, WaitTime: l.cfg.TTL}).WithContext(ctx)
	pair, meta, err := l.c.KV().Get(l.cfg.Key, opts)
	if err != nil {
		return leaser.Holder{}, index, l.unreachable("read the lease", err)
	}
	next := meta.LastIndex
	if next < index {
		next = 0 // the index went backwards (a new Consul cluster): start over
	}
	if pair == nil {
		return leaser.Holder{}, next, leaser.ErrNoPrimary
	}
	if pair.Session == "" {
		return leaser.Holder{Freed: pair.ModifyIndex}, next, leaser.ErrNoPrimary
	}
	var info leaser.Info
	if err := json.Unmarshal(pair.Value, &info); err != nil || info.Hostname == "" {
		return leaser.Holder{}, next, fmt.Errorf("the lease at %s holds %q, not {hostname, advertise-url} JSON: %w", l.cfg.Key, pair.Value, pagewire.ErrCorrupt)
	}
	return leaser.Holder{Info: info, Epoch: pagewire.Epoch(pair.ModifyIndex)}, next, nil
}

// Acquire creates a session and takes the lock with it. The epoch is the
// key's ModifyIndex after the acquisition: Consul's Raft index, larger for
// every later write, so every acquisition gets a larger epoch than any
// before it. With CheckTTL set, it first registers this node's check
// (passing) and ties the session to it alone, without serfHealth (see
// README, "Handoff and safe failover").
func (l *Leaser) Acquire(ctx context.Context) (leaser.Lease, error) {
	if !l.cfg.Candidate {
		return nil, leaser.ErrNotCandidate
	}
	if err := l.waitLastLease(ctx); err != nil {
		return nil, err
	}
	if err := l.ensureClusterID(ctx); err != nil {
		return nil, err
	}

	// The lease's value describes this node.
	value, err := json.Marshal(l.cfg.Node)
	if err != nil {
		return nil, err
	}

	// The check, if any, passing from now on.
	fence := l.fenceFor()
	var check string
	passed := time.Now()
	if fence.checkTTL > 0 {
		check, err = l.registerCheck(ctx)
		if err != nil {
			return nil, err
		}
		if check == "" {
			fence.checkTTL = 0 // refused: the session is LiteFS's
		}
	}

	// A session holds the lease: Consul releases the lease when the session ends.
	created := time.Now()
	id, err := l.createSession(ctx, check)
	if err != nil {
		if check != "" {
			_ = l.deregisterCheck(context.WithoutCancel(ctx), check)
		}
		return nil, err
	}
	destroy := func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = l.c.Session().Destroy(id, (&api.WriteOptions{}).WithContext(dctx))
		if check != "" {
			_ = l.deregisterCheck(dctx, check)
		}
	}

	// Take the lease under the session.
	wopts := (&api.WriteOptions{}).WithContext(ctx)
	ok, _, err := l.c.KV().Acquire(&api.KVPair{Key: l.cfg.Key, Value: value, Session: id}, wopts)
	if err != nil {
		destroy()
		return nil, l.unreachable("take the lease", err)
	}
	if !ok {
		destroy()
		holder, err := l.Primary(ctx)
		switch {
		case err == nil:
			return nil, &leaser.HeldError{Holder: holder}
		case errors.Is(err, leaser.ErrNoPrimary):
			// Free, but within another session's lock-delay.
			return nil, fmt.Errorf("%w: the last holder's lock-delay (%s) has not passed", leaser.ErrHeld, l.cfg.LockDelay)
		default:
			return nil, err
		}
	}

	// Read it back, consistently: its modify index is the epoch.
	pair, _, err := l.c.KV().Get(l.cfg.Key, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil || pair == nil || pair.Session != id {
		destroy()
		if err == nil {
			err = errors.New("the lease changed hands as it was taken")
		}
		return nil, l.unreachable("read the lease back", err)
	}

	// Taken in time: before the session or the check could lapse.
	if now := time.Now(); !now.Before(fence.renewBy(created)) || (check != "" && !now.Before(fence.passBy(passed))) {
		destroy()
		return nil, l.unreachable("take the lease", fmt.Errorf("taking it took %s, too long to keep the session and its check alive", now.Sub(passed).Round(time.Millisecond)))
	}

	// Keep it renewed (and the check passing) in the background.
	ls := &heldLease{l: l, id: id, check: check, epoch: pagewire.Epoch(pair.ModifyIndex), fence: fence,
		lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{}), renewed: created, passed: passed}
	l.mu.Lock()
	l.held = ls
	l.mu.Unlock()
	l.log.Info("acquired the lease", logkey.Epoch, ls.epoch, logKeySession, id, logKeyCheck, check)
	go ls.run()
	return ls, nil
}

// fenceFor is the deadlines' arithmetic for this configuration.
func (l *Leaser) fenceFor() fence {
	return fence{ttl: l.cfg.TTL, checkTTL: l.cfg.CheckTTL, lockDelay: l.cfg.LockDelay}
}

// waitLastLease waits until the last lease taken, if lost or released, has
// cleaned up: it deregisters the check that Acquire registers again.
func (l *Leaser) waitLastLease(ctx context.Context) error {
	l.mu.Lock()
	last := l.held
	l.mu.Unlock()
	if last == nil || !last.ending() {
		return nil
	}
	select {
	case <-last.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// CheckID is the ID of this node's check on the agent: unique per
// hostname and lease key, so that nodes and clusters sharing an agent each
// have their own.
func (l *Leaser) CheckID() string {
	host := strings.Map(func(r rune) rune {
		if r < 0x80 && (r == '-' || r == '.' || r == '_' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z') {
			return r
		}
		return '_'
	}, l.cfg.Node.Hostname)
	h := fnv.New32a()
	h.Write([]byte(l.cfg.Key))
	return fmt.Sprintf("pagewire-%s-%08x", host, h.Sum32())
}

// registerCheck registers (or re-registers) this node's TTL check as
// passing and returns its ID; "" if the agent refused it (an ACL token
// without node write, e.g.), and the session is then LiteFS's.
func (l *Leaser) registerCheck(ctx context.Context) (string, error) {
	id := l.CheckID()
	reg := &api.AgentCheckRegistration{
		ID:   id,
		Name: "pagewire lease " + l.cfg.Key + " held by " + l.cfg.Node.Hostname,
		Notes: fmt.Sprintf("Passed by pagewire every %s while this node holds the lease at %s; its session ends when this check goes critical. Deregistered when the node gives up the lease.",
			l.cfg.CheckTTL/4, l.cfg.Key),
		AgentServiceCheck: api.AgentServiceCheck{TTL: l.cfg.CheckTTL.String(), Status: api.HealthPassing},
	}
	err := l.c.Agent().CheckRegisterOpts(reg, (&api.QueryOptions{}).WithContext(ctx))
	switch {
	case err == nil:
		l.checkDenied.Store(false)
		return id, nil
	case statusCode(err) == http.StatusForbidden:
		if !l.checkDenied.Swap(true) {
			l.log.Warn("the Consul agent refused this node's check (its token needs node:write on the agent's node, or set lease.consul.check-ttl: 0): "+
				"the lease is held by its TTL alone, and a dead primary's lease frees up to twice lease.consul.ttl after it died", logkey.Error, err)
		}
		return "", nil
	default:
		return "", l.unreachable("register this node's check", err)
	}
}

// deregisterCheck removes this node's check; one already gone is not an
// error.
func (l *Leaser) deregisterCheck(ctx context.Context, id string) error {
	err := l.c.Agent().CheckDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx))
	if statusCode(err) == http.StatusNotFound {
		return nil
	}
	return err
}

// createSession creates the lease's session, tied to check if not "" (and
// then to nothing else but its TTL), else to Consul's default serfHealth.
// The agent tells the catalog of a check it just registered a moment
// later: until then Consul refuses the session ("Missing check", or
// critical as an earlier registration left it), and it is retried for up
// to 2 s.
func (l *Leaser) createSession(ctx context.Context, check string) (string, error) {
	entry := &api.SessionEntry{
		Name:      "pagewire " + l.cfg.Node.Hostname,
		TTL:       l.cfg.TTL.String(),
		LockDelay: l.cfg.LockDelay,
		Behavior:  api.SessionBehaviorRelease,
	}
	if check != "" {
		entry.NodeChecks = []string{check}
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		id, _, err := l.c.Session().Create(entry, (&api.WriteOptions{}).WithContext(ctx))
		if err == nil {
			return id, nil
		}
		msg := err.Error()
		if check == "" || !(strings.Contains(msg, "Missing check") || strings.Contains(msg, "critical state")) || time.Now().After(deadline) {
			return "", l.unreachable("create a session", err)
		}
		select {
		case <-ctx.Done():
			return "", l.unreachable("create a session", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ensureClusterID writes a cluster ID at Key/clusterid if there is none,
// as LiteFS does on first use of a key.
func (l *Leaser) ensureClusterID(ctx context.Context) error {
	key := l.cfg.Key + "/clusterid"
	pair, _, err := l.c.KV().Get(key, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return l.unreachable("read the cluster ID", err)
	}
	if pair != nil {
		return nil
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	id := "LFSC" + strings.ToUpper(hex.EncodeToString(b))
	// Check-and-set on index 0: only if still absent.
	if _, _, err := l.c.KV().CAS(&api.KVPair{Key: key, Value: []byte(id), ModifyIndex: 0}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return l.unreachable("write the cluster ID", err)
	}
	return nil
}

// ClusterID returns the cluster ID at Key/clusterid, "" if none yet.
func (l *Leaser) ClusterID(ctx context.Context) (string, error) {
	pair, _, err := l.c.KV().Get(l.cfg.Key+"/clusterid", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return "", l.unreachable("read the cluster ID", err)
	}
	if pair == nil {
		return "", nil
	}
	return string(pair.Value), nil
}
