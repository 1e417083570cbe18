package consul

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
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
	// Candidate: this node may take the lease (false: it only follows).
	Candidate bool
	// Node is this node; its Hostname is required.
	Node leaser.Info
	// Logger; nil: slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns LiteFS's defaults: the lease at "litefs/primary",
// a 10s TTL and a 1s lock-delay. URL and Node are left for the caller.
func DefaultConfig() Config {
	return Config{Key: "litefs/primary", TTL: 10 * time.Second, LockDelay: time.Second}
}

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
// before it.
func (l *Leaser) Acquire(ctx context.Context) (leaser.Lease, error) {
	if !l.cfg.Candidate {
		return nil, leaser.ErrNotCandidate
	}
	if err := l.ensureClusterID(ctx); err != nil {
		return nil, err
	}

	// The lease's value describes this node.
	value, err := json.Marshal(l.cfg.Node)
	if err != nil {
		return nil, err
	}

	// A session holds the lease: Consul releases the lease when the session ends.
	wopts := (&api.WriteOptions{}).WithContext(ctx)
	id, _, err := l.c.Session().Create(&api.SessionEntry{
		Name:      "pagewire " + l.cfg.Node.Hostname,
		TTL:       l.cfg.TTL.String(),
		LockDelay: l.cfg.LockDelay,
		Behavior:  api.SessionBehaviorRelease,
	}, wopts)
	if err != nil {
		return nil, l.unreachable("create a session", err)
	}
	created := time.Now()
	destroy := func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = l.c.Session().Destroy(id, (&api.WriteOptions{}).WithContext(dctx))
	}

	// Take the lease under the session.
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

	// Keep it renewed in the background.
	ls := &heldLease{l: l, id: id, epoch: pagewire.Epoch(pair.ModifyIndex), lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	ls.renewed = created
	l.log.Info("acquired the lease", logkey.Epoch, ls.epoch, logKeySession, id)
	go ls.renew()
	return ls, nil
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
