package safego

import (
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/pagewire/pagewire/internal/logkey"
)

// PanicError is a recovered panic.
type PanicError struct {
	What  string // the work that panicked, as passed to Call
	Value any    // the value passed to panic
	Stack []byte // the panicking goroutine's stack
}

// Error says what panicked and that it is a bug; the stack is in the log.
func (e *PanicError) Error() string {
	return fmt.Sprintf("panic in %s: %v (a bug in pagewire: please report it with the stack logged with it)", e.What, e.Value)
}

// Call runs f and returns its error. If f panics, Call recovers, logs the
// panic with its stack on log (nil: slog.Default()) and returns a
// *PanicError; what names the work ("prune transaction logs") in both.
func Call(log *slog.Logger, what string, f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = Recovered(log, what, p)
		}
	}()
	return f()
}

// Recovered logs p, a value just recovered from a panic, with the current
// goroutine's stack, and returns it as a *PanicError. Call it from the
// deferred function that recovered p, so that the stack shows where the
// panic happened.
func Recovered(log *slog.Logger, what string, p any) *PanicError {
	if log == nil {
		log = slog.Default()
	}
	e := &PanicError{What: what, Value: p, Stack: debug.Stack()}
	log.Error("recovered a panic: this is a bug in pagewire; please report it with this stack",
		logkey.Task, what, logkey.Panic, fmt.Sprint(p), logkey.Stack, string(e.Stack))
	return e
}
