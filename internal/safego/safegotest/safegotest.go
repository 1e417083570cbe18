// Package safegotest lets a test see the panics that a node's parts
// recovered (and logged, with logkey.Panic): a recovered panic is still a
// bug, so a test that drives hostile input fails on one.
package safegotest

import (
	"context"
	"log/slog"
	"sync"

	"github.com/pagewire/pagewire/internal/logkey"
)

// Recorder is a slog.Handler that keeps every record carrying a
// logkey.Panic attribute and drops the rest. Use one as the Logger of the
// parts under test. It is safe for concurrent use.
type Recorder struct {
	mu     *sync.Mutex
	panics *[]Panic
	attrs  []slog.Attr // from WithAttrs
}

// Panic is one recovered panic, as logged.
type Panic struct {
	Task  string // logkey.Task
	Value string // logkey.Panic
	Stack string // logkey.Stack
}

var _ slog.Handler = (*Recorder)(nil)

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder { return &Recorder{mu: new(sync.Mutex), panics: new([]Panic)} }

// Logger returns a logger that logs to r.
func (r *Recorder) Logger() *slog.Logger { return slog.New(r) }

// Panics returns the panics recorded so far.
func (r *Recorder) Panics() []Panic {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Panic(nil), *r.panics...)
}

// Reset forgets the panics recorded so far.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.panics = nil
}

// Enabled reports true at every level: a panic is logged at error level,
// but the recorder does not rely on it.
func (r *Recorder) Enabled(context.Context, slog.Level) bool { return true }

// Handle records rec if it carries logkey.Panic.
func (r *Recorder) Handle(_ context.Context, rec slog.Record) error {
	var p Panic
	found := false
	visit := func(a slog.Attr) bool {
		switch a.Key {
		case logkey.Panic:
			p.Value, found = a.Value.String(), true
		case logkey.Task:
			p.Task = a.Value.String()
		case logkey.Stack:
			p.Stack = a.Value.String()
		}
		return true
	}
	for _, a := range r.attrs {
		visit(a)
	}
	rec.Attrs(visit)
	if found {
		r.mu.Lock()
		*r.panics = append(*r.panics, p)
		r.mu.Unlock()
	}
	return nil
}

// WithAttrs returns a handler that records into the same list.
func (r *Recorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *r
	c.attrs = append(append([]slog.Attr(nil), r.attrs...), attrs...)
	return &c
}

// WithGroup returns r: the recorder looks at attributes by key only.
func (r *Recorder) WithGroup(string) slog.Handler { return r }
