package server

import (
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/pagewire/pagewire"
)

// subscribers records the replicas the primary streams to: for
// litefs_subscriber_count and the replicas of GET /api/v1/dbs/{name}.
type subscribers struct {
	// gone, if set, is called when a replica has no stream of db left.
	gone func(db, hostname string)

	mu       sync.Mutex
	watchers map[string]int                  // hostname → open WatchDatabases streams
	addrs    map[netip.Addr]int              // the watchers' addresses → their streams
	streams  map[string]map[string]*subState // db → hostname → its streams
}

// subState is one replica's streams of one database: its
// StreamTransactions and AcknowledgeTransactions.
type subState struct {
	applied  pagewire.TXID // the last TXID it said it applied (at first, where its stream began)
	caughtUp time.Time     // when it last said it had everything
	n        int           // open streams (a reconnecting replica may briefly have more)
}

// ReplicaInfo is a replica of one database, as the primary sees it.
type ReplicaInfo struct {
	Hostname string
	TXID     pagewire.TXID // the last TXID it acknowledged having applied
	Lag      time.Duration // since it last had everything; 0 if it has
}

func newSubscribers(gone func(db, hostname string)) *subscribers {
	return &subscribers{gone: gone, watchers: map[string]int{}, addrs: map[netip.Addr]int{}, streams: map[string]map[string]*subState{}}
}

// watch counts a WatchDatabases stream from addr (the zero Addr for one
// that did not come over TCP) until the returned func is called.
func (s *subscribers) watch(hostname string, addr netip.Addr) (done func()) {
	s.mu.Lock()
	s.watchers[hostname]++
	if addr.IsValid() {
		s.addrs[addr]++
	}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.watchers[hostname]--; s.watchers[hostname] <= 0 {
			delete(s.watchers, hostname)
		}
		if addr.IsValid() {
			if s.addrs[addr]--; s.addrs[addr] <= 0 {
				delete(s.addrs, addr)
			}
		}
	}
}

// watchedFrom reports whether a replica watches the primary from addr.
func (s *subscribers) watchedFrom(addr netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addrs[addr] > 0
}

// count is how many replicas watch the primary.
func (s *subscribers) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.watchers)
}

// stream records a replica's stream of db, which began at its position
// have, until done is called.
func (s *subscribers) stream(db, hostname string, have pagewire.TXID) (done func()) {
	s.mu.Lock()
	m := s.streams[db]
	if m == nil {
		m = map[string]*subState{}
		s.streams[db] = m
	}
	st := m[hostname]
	if st == nil {
		st = &subState{applied: have, caughtUp: time.Now()}
		m[hostname] = st
	}
	st.n++
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		last := false
		if st.n--; st.n <= 0 && m[hostname] == st {
			delete(m, hostname)
			last = true
		}
		s.mu.Unlock()
		if last && s.gone != nil {
			s.gone(db, hostname)
		}
	}
}

// applied records that replica hostname applied db up to txid, when the
// primary was at primary.
func (s *subscribers) applied(db, hostname string, txid, primary pagewire.TXID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[db][hostname]
	if st == nil {
		return
	}
	st.applied = txid
	if txid >= primary {
		st.caughtUp = time.Now()
	}
}

// replicas lists db's replicas, given the primary's TXID now.
func (s *subscribers) replicas(db string, primary pagewire.TXID) []ReplicaInfo {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []ReplicaInfo{}
	for host, st := range s.streams[db] {
		ri := ReplicaInfo{Hostname: host, TXID: st.applied}
		if st.applied < primary {
			ri.Lag = now.Sub(st.caughtUp)
		}
		out = append(out, ri)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Hostname < out[j].Hostname })
	return out
}
