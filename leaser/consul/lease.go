package consul

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/internal/safego"
	"github.com/pagewire/pagewire/leaser"
)

// heldLease is a held Consul lock. One goroutine renews its session every
// TTL/2; another, when the session is tied to this node's TTL check,
// passes the check every checkTTL/4. If either is not answered by its
// deadline (see fence), or the session or check is gone, the lease is
// lost; writes stop then, before Consul could hand the lock to another
// node. A lost lease destroys its session and deregisters its check.
type heldLease struct {
	l     *Leaser
	id    string // the session's
	check string // the check the session is tied to; "" if none
	epoch pagewire.Epoch
	fence fence
	lost  chan struct{}
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once

	mu      sync.Mutex
	renewed time.Time // when the last acknowledged renewal was sent
	passed  time.Time // when the last acknowledged check pass was sent
	lostAt  time.Time
}

var _ leaser.Lease = (*heldLease)(nil)

// Epoch is the lease key's ModifyIndex when this node took it.
func (s *heldLease) Epoch() pagewire.Epoch { return s.epoch }

// Lost is closed when the lease is lost (see heldLease).
func (s *heldLease) Lost() <-chan struct{} { return s.lost }

// ValidUntil is the fence's write deadline from the last acknowledged
// renewal and pass (see fence), or when the lease was lost.
func (s *heldLease) ValidUntil() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.lostAt.IsZero() {
		return s.lostAt
	}
	return s.fence.validUntil(s.renewed, s.passed)
}

// ending reports whether the lease was lost or released: its goroutines
// have ended or are about to.
func (s *heldLease) ending() bool {
	select {
	case <-s.lost:
		return true
	case <-s.stop:
		return true
	default:
		return false
	}
}

// run keeps the lease until Release stops it or it is lost, and then, if
// lost, gives up the session and the check. A panic in it loses the lease:
// without renewals this node must not go on taking writes.
func (s *heldLease) run() {
	defer close(s.done)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := safego.Call(s.l.log, "renew the lease", func() error { s.renewLoop(); return nil }); err != nil {
			s.markLost(err.Error())
		}
	})
	if s.check != "" {
		wg.Go(func() {
			if err := safego.Call(s.l.log, "pass the lease's check", func() error { s.passLoop(); return nil }); err != nil {
				s.markLost(err.Error())
			}
		})
	}
	wg.Wait()
	select {
	case <-s.stop:
	default:
		_ = safego.Call(s.l.log, "clean up after the lost lease", func() error { s.giveUp(); return nil })
	}
}

// renewLoop renews the session every half TTL, retrying a failure every
// second.
func (s *heldLease) renewLoop() {
	s.keep("renew the session", s.l.cfg.TTL/2, s.l.cfg.TTL/2, time.Second, &s.renewed, s.fence.renewBy, func(ctx context.Context) (string, error) {
		entry, _, err := s.l.c.Session().Renew(s.id, (&api.WriteOptions{}).WithContext(ctx))
		if err == nil && entry == nil {
			return "Consul no longer knows the session (it expired, or a check it is tied to failed)", nil
		}
		return "", err
	})
}

// passLoop passes the check at once and then every quarter of its TTL,
// retrying a failure twice as often.
func (s *heldLease) passLoop() {
	every := s.fence.passEvery()
	s.keep("pass the check", 0, every, every/2, &s.passed, s.fence.passBy, func(ctx context.Context) (string, error) {
		err := s.l.c.Agent().UpdateTTLOpts(s.check, "", api.HealthPassing, (&api.QueryOptions{}).WithContext(ctx))
		if statusCode(err) == http.StatusNotFound {
			return "the Consul agent no longer knows check " + s.check + ", so the session is gone", nil
		}
		return "", err
	})
}

// keep calls op after first, then every `every` (retry after a failure) until the lease is
// stopped or lost. An answer must arrive before by(*last), *last being
// when the last acknowledged call was sent; one that comes later does not
// count, and the lease is lost. op returns a reason if the lease is gone.
func (s *heldLease) keep(what string, first, every, retry time.Duration, last *time.Time, by func(time.Time) time.Time, op func(context.Context) (string, error)) {
	within := by(time.Time{}).Sub(time.Time{})
	next := time.NewTimer(first)
	defer next.Stop()
	for {
		// Wait for the next call, unless the lease is stopped or lost first.
		s.mu.Lock()
		deadline := by(*last)
		s.mu.Unlock()
		lose := time.NewTimer(time.Until(deadline))
		select {
		case <-s.stop:
			lose.Stop()
			return
		case <-s.lost:
			lose.Stop()
			return
		case <-lose.C:
			s.markLost("could not " + what + " in time: none answered within " + within.String() + " of the last")
			return
		case <-next.C:
			lose.Stop()
		}

		// Call before the deadline; an answer after it does not count.
		sent := time.Now()
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		gone, err := op(ctx)
		cancel()
		switch {
		case gone != "":
			s.markLost(gone)
			return
		case !time.Now().Before(deadline):
			s.markLost("could not " + what + " in time: the answer came after the deadline")
			return
		case err != nil:
			s.l.log.Warn("could not "+what+"; retrying", logkey.Error, s.l.unreachable(what, err), logKeyLostIn, time.Until(deadline).Round(time.Millisecond))
			next.Reset(retry)
		default:
			s.mu.Lock()
			*last = sent
			s.mu.Unlock()
			next.Reset(every)
		}
	}
}

// statusCode is the HTTP status of a Consul API error, 0 if it has none.
func statusCode(err error) int {
	var se api.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
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

// giveUp destroys a lost lease's session (Consul keeps the lock from
// everyone for lock-delay after) and deregisters its check, as far as
// Consul answers within 5 s.
func (s *heldLease) giveUp() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := s.l.c.Session().Destroy(s.id, (&api.WriteOptions{}).WithContext(ctx))
	if s.check != "" {
		err = errors.Join(err, s.l.deregisterCheck(ctx, s.check))
	}
	if err != nil {
		s.l.log.Warn("could not clean up after the lost lease; Consul expires what is left", logkey.Error, s.l.unreachable("clean up", err))
	}
}

// Release stops renewing, releases the lock, destroys the session and
// deregisters the check (after the session, so that no invalidation
// delays the next holder by lock-delay).
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
		if s.check != "" {
			if cerr := s.l.deregisterCheck(ctx, s.check); cerr != nil && err == nil {
				err = s.l.unreachable("deregister the check", cerr)
			}
		}
		if err == nil {
			s.l.log.Info("released the lease", logkey.Epoch, s.epoch)
		}
	})
	return err
}
