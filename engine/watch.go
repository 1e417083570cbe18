package engine

import (
	"context"
	"sync"
)

// FileChange is a change the store made to a file by itself, which the
// mount must pass on to the kernel's caches.
type FileChange struct {
	Name   string
	ID     uint64 // the file's id before the change
	Entry  bool   // the name now means another file or none
	Offset int64  // first changed byte
	Length int64  // changed bytes: 0 none, -1 all from Offset
}

// Watcher receives FileChanges. Changes queue without bound: an
// invalidation is never dropped.
type Watcher struct {
	s    *Store
	wake chan struct{} // has a token when pending is non-empty

	// mu guards pending.
	mu      sync.Mutex
	pending []FileChange
}

// Watch starts receiving changes; Close stops.
func (s *Store) Watch() *Watcher {
	w := &Watcher{s: s, wake: make(chan struct{}, 1)}
	s.watchMu.Lock()
	s.watchers[w] = struct{}{}
	s.watchMu.Unlock()
	return w
}

// Next waits for changes, or returns ctx's error.
func (w *Watcher) Next(ctx context.Context) ([]FileChange, error) {
	for {
		w.mu.Lock()
		if len(w.pending) > 0 {
			out := w.pending
			w.pending = nil
			w.mu.Unlock()
			return out, nil
		}
		w.mu.Unlock()
		select {
		case <-w.wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close stops the watcher.
func (w *Watcher) Close() {
	w.s.watchMu.Lock()
	delete(w.s.watchers, w)
	w.s.watchMu.Unlock()
}

// notify queues changes for every watcher.
func (s *Store) notify(changes ...FileChange) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	for w := range s.watchers {
		w.mu.Lock()
		w.pending = append(w.pending, changes...)
		w.mu.Unlock()
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}
