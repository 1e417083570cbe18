package consul

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/internal/safego"
	"github.com/pagewire/pagewire/leaser"
)

// heldLease is a held Consul lock. A goroutine renews its session every
// TTL/2; if no renewal succeeds within lostAfter of the last one, or the
// session is gone, the lease is lost. lostAfter is well inside the TTL, so
// the node stops taking writes before Consul could hand the lock to
// another node (Consul waits at least the TTL, plus lock-delay).
type heldLease struct {
	l     *Leaser
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

var _ leaser.Lease = (*heldLease)(nil)

// Epoch is the lease key's ModifyIndex when this node took it.
func (s *heldLease) Epoch() pagewire.Epoch { return s.epoch }

// Lost is closed when the lease is lost (see heldLease).
func (s *heldLease) Lost() <-chan struct{} { return s.lost }

// ValidUntil is lostAfter past the last successful renewal: Consul keeps
// the session at least a TTL after it, so no other node can hold the lock
// before then.
func (s *heldLease) ValidUntil() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.renewed.Add(s.lostAfter())
}

// lostAfter is how long after the last successful renewal the lease counts
// as lost.
func (s *heldLease) lostAfter() time.Duration { return s.l.cfg.TTL * 3 / 4 }

// renew renews the session until Release stops it or the lease is lost.
// A panic in it loses the lease: without renewals this node must not go
// on taking writes.
func (s *heldLease) renew() {
	defer close(s.done)
	if err := safego.Call(s.l.log, "renew the lease", func() error { s.renewLoop(); return nil }); err != nil {
		s.markLost(err.Error())
	}
}

// renewLoop is renew's loop.
func (s *heldLease) renewLoop() {
	// Renew every half TTL, and retry a failure every second.
	every := s.l.cfg.TTL / 2
	retry := time.Second
	next := time.NewTimer(every)
	defer next.Stop()
	for {
		// Wait for the next renewal, unless the lease is stopped or lost first.
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

		// Renew the session before the deadline.
		sent := time.Now()
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		entry, _, err := s.l.c.Session().Renew(s.id, (&api.WriteOptions{}).WithContext(ctx))
		cancel()

		// A session Consul no longer knows means the lease is lost; a failure retries sooner.
		switch {
		case err == nil && entry == nil:
			s.markLost("Consul no longer knows the session")
			return
		case err != nil:
			s.l.log.Warn("could not renew the lease; retrying", logkey.Error, s.l.unreachable("renew the session", err), logKeyLostIn, time.Until(deadline).Round(time.Millisecond))
			next.Reset(retry)
		default:
			s.mu.Lock()
			s.renewed = sent
			s.mu.Unlock()
			next.Reset(every)
		}
	}
}

// markLost records when and why the lease was lost and closes lost, once.
func (s *heldLease) markLost(why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.lost:
		return
	default:
	}
	s.lostAt = time.Now()
	s.l.log.Error("lost the lease: this node stops taking writes", logkey.Reason, why, logkey.Epoch, s.epoch)
	close(s.lost)
}

// Release stops renewing, releases the lock and destroys the session.
func (s *heldLease) Release(ctx context.Context) error {
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
			s.l.log.Info("released the lease", logkey.Epoch, s.epoch)
		}
	})
	return err
}
