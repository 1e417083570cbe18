package leaser

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
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/pagewire/pagewire"
)

// ConsulConfig configures a Consul lease.
type ConsulConfig struct {
	// URL is the Consul agent's HTTP URL (lease.consul.url, usually
	// ${FLY_CONSUL_URL}); a token may ride in it as user info or as a
	// ?token= query, as Fly's does.
	URL string
	// Key is where the lease lives (lease.consul.key); the cluster ID is
	// at Key + "/clusterid".
	Key string
	// TTL is the session TTL; Consul's minimum is 10s.
	TTL time.Duration
	// LockDelay is how long Consul keeps a lock from being re-acquired
	// after its session is invalidated.
	LockDelay time.Duration
	// Candidate: this node may take the lease.
	Candidate bool
	// Node is this node.
	Node Info
	// Logger; nil: slog.Default().
	Logger *slog.Logger
}

// Validate reports the first bad value, naming its config key.
func (c ConsulConfig) Validate() error {
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
		return errors.New("leaser: the node's hostname is required")
	}
	return nil
}

// Consul is a lease held as a Consul session lock on Key, laid out as
// LiteFS lays it out: the value is this node's Info as JSON.
type Consul struct {
	cfg ConsulConfig
	c   *api.Client
	log *slog.Logger
}

var _ Leaser = (*Consul)(nil)

// NewConsul builds a Consul lease; it connects lazily.
func NewConsul(cfg ConsulConfig) (*Consul, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	acfg, err := apiConfig(cfg.URL)
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
	return &Consul{cfg: cfg, c: c, log: log.With("component", "leaser", "key", cfg.Key)}, nil
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

func (l *Consul) Type() string { return "consul" }

// unreachable wraps an error talking to Consul with what to check.
func (l *Consul) unreachable(op string, err error) error {
	return fmt.Errorf("%s: Consul at %s did not answer (check lease.consul.url, and FLY_CONSUL_URL on Fly.io): %w", op, redact(l.cfg.URL), err)
}

// Primary reads the lease's holder.
func (l *Consul) Primary(ctx context.Context) (Info, error) {
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
func (l *Consul) WaitPrimary(ctx context.Context, index uint64) (Holder, uint64, error) {
	opts := (&api.QueryOptions{WaitIndex: index, WaitTime: l.cfg.TTL}).WithContext(ctx)
	pair, meta, err := l.c.KV().Get(l.cfg.Key, opts)
	if err != nil {
		return Holder{}, index, l.unreachable("read the lease", err)
	}
	next := meta.LastIndex
	if next < index {
		next = 0 // the index went backwards (a new Consul cluster): start over
	}
	if pair == nil {
		return Holder{}, next, ErrNoPrimary
	}
	if pair.Session == "" {
		return Holder{Freed: pair.ModifyIndex}, next, ErrNoPrimary
	}
	var info Info
	if err := json.Unmarshal(pair.Value, &info); err != nil || info.Hostname == "" {
		return Holder{}, next, fmt.Errorf("the lease at %s holds %q, not {hostname, advertise-url} JSON: %w", l.cfg.Key, pair.Value, pagewire.ErrCorrupt)
	}
	return Holder{Info: info, Epoch: pagewire.Epoch(pair.ModifyIndex)}, next, nil
}

// Acquire creates a session and takes the lock with it. The epoch is the
// key's ModifyIndex after the acquisition: Consul's Raft index, larger for
// every later write, so every acquisition gets a larger epoch than any
// before it.
func (l *Consul) Acquire(ctx context.Context) (Lease, error) {
	if !l.cfg.Candidate {
		return nil, ErrNotCandidate
	}
	if err := l.ensureClusterID(ctx); err != nil {
		return nil, err
	}
	value, err := json.Marshal(l.cfg.Node)
	if err != nil {
		return nil, err
	}
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
			return nil, &HeldError{Holder: holder}
		case errors.Is(err, ErrNoPrimary):
			// Free, but within another session's lock-delay.
			return nil, fmt.Errorf("%w: the last holder's lock-delay (%s) has not passed", ErrHeld, l.cfg.LockDelay)
		default:
			return nil, err
		}
	}
	pair, _, err := l.c.KV().Get(l.cfg.Key, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil || pair == nil || pair.Session != id {
		destroy()
		if err == nil {
			err = errors.New("the lease changed hands as it was taken")
		}
		return nil, l.unreachable("read the lease back", err)
	}
	ls := &consulLease{l: l, id: id, epoch: pagewire.Epoch(pair.ModifyIndex), lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	ls.renewed = created
	l.log.Info("acquired the lease", "epoch", ls.epoch, "session", id)
	go ls.renew()
	return ls, nil
}

// ensureClusterID writes a cluster ID at Key/clusterid if there is none,
// as LiteFS does on first use of a key.
func (l *Consul) ensureClusterID(ctx context.Context) error {
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
func (l *Consul) ClusterID(ctx context.Context) (string, error) {
	pair, _, err := l.c.KV().Get(l.cfg.Key+"/clusterid", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return "", l.unreachable("read the cluster ID", err)
	}
	if pair == nil {
		return "", nil
	}
	return string(pair.Value), nil
}

// consulLease is a held Consul lock. A goroutine renews its session every
// TTL/2; if no renewal succeeds within lostAfter of the last one, or the
// session is gone, the lease is lost. lostAfter is well inside the TTL, so
// the node stops taking writes before Consul could hand the lock to
// another node (Consul waits at least the TTL, plus lock-delay).
type consulLease struct {
	l     *Consul
	id    string
	epoch pagewire.Epoch
	lost  chan struct{}
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once

	mu      sync.Mutex
	renewed time.Time // when the last successful renewal was sent
	lostAt  time.Time
}

func (s *consulLease) Epoch() pagewire.Epoch { return s.epoch }
func (s *consulLease) Lost() <-chan struct{} { return s.lost }

// ValidUntil is lostAfter past the last successful renewal: Consul keeps
// the session at least a TTL after it, so no other node can hold the lock
// before then.
func (s *consulLease) ValidUntil() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.renewed.Add(s.lostAfter())
}

// lostAfter is how long after the last successful renewal the lease counts
// as lost.
func (s *consulLease) lostAfter() time.Duration { return s.l.cfg.TTL * 3 / 4 }

func (s *consulLease) renew() {
	defer close(s.done)
	every := s.l.cfg.TTL / 2
	retry := time.Second
	next := time.NewTimer(every)
	defer next.Stop()
	for {
		s.mu.Lock()
		deadline := s.renewed.Add(s.lostAfter())
		s.mu.Unlock()
		lose := time.NewTimer(time.Until(deadline))
		select {
		case <-s.stop:
			lose.Stop()
			return
		case <-lose.C:
			s.markLost("no renewal succeeded within " + s.lostAfter().String())
			return
		case <-next.C:
			lose.Stop()
		}
		sent := time.Now()
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		entry, _, err := s.l.c.Session().Renew(s.id, (&api.WriteOptions{}).WithContext(ctx))
		cancel()
		switch {
		case err == nil && entry == nil:
			s.markLost("Consul no longer knows the session")
			return
		case err != nil:
			s.l.log.Warn("could not renew the lease; retrying", "error", s.l.unreachable("renew the session", err), "lost_in", time.Until(deadline).Round(time.Millisecond))
			next.Reset(retry)
		default:
			s.mu.Lock()
			s.renewed = sent
			s.mu.Unlock()
			next.Reset(every)
		}
	}
}

func (s *consulLease) markLost(why string) {
	s.mu.Lock()
	s.lostAt = time.Now()
	s.mu.Unlock()
	s.l.log.Error("lost the lease: this node stops taking writes", "reason", why, "epoch", s.epoch)
	close(s.lost)
}

// Release stops renewing, releases the lock and destroys the session.
func (s *consulLease) Release(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		wopts := (&api.WriteOptions{}).WithContext(ctx)
		if _, _, rerr := s.l.c.KV().Release(&api.KVPair{Key: s.l.cfg.Key, Session: s.id}, wopts); rerr != nil {
			err = s.l.unreachable("release the lease", rerr)
		}
		if _, derr := s.l.c.Session().Destroy(s.id, wopts); derr != nil && err == nil {
			err = s.l.unreachable("destroy the session", derr)
		}
		if err == nil {
			s.l.log.Info("released the lease", "epoch", s.epoch)
		}
	})
	return err
}
