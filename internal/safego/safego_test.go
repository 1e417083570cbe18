package safego_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/pagewire/pagewire/internal/safego"
	"github.com/pagewire/pagewire/internal/safego/safegotest"
)

func TestCall(t *testing.T) {
	rec := safegotest.NewRecorder()
	log := rec.Logger()

	t.Run("returns f's error", func(t *testing.T) {
		want := errors.New("boom")
		if err := safego.Call(log, "work", func() error { return want }); err != want {
			t.Fatalf("err=%v, want %v", err, want)
		}
		if err := safego.Call(log, "work", func() error { return nil }); err != nil {
			t.Fatalf("err=%v, want nil", err)
		}
		if got := rec.Panics(); len(got) != 0 {
			t.Fatalf("logged %v, want no panic", got)
		}
	})

	t.Run("a panic becomes a PanicError, logged with its stack", func(t *testing.T) {
		rec.Reset()
		err := safego.Call(log.With("component", "test"), "index the moon", func() error {
			_ = index(nil, 3) // a runtime error, as a bug would make
			return nil
		})
		var pe *safego.PanicError
		if !errors.As(err, &pe) {
			t.Fatalf("err=%v (%T), want a *PanicError", err, err)
		}
		if pe.What != "index the moon" || !strings.Contains(err.Error(), "index the moon") || !strings.Contains(err.Error(), "index out of range") {
			t.Fatalf("err=%q, want it to name the work and the panic", err)
		}
		got := rec.Panics()
		if len(got) != 1 {
			t.Fatalf("logged %d panics, want 1", len(got))
		}
		// The stack shows where it panicked, not just where it was recovered.
		if got[0].Task != "index the moon" || !strings.Contains(got[0].Value, "index out of range") || !strings.Contains(got[0].Stack, "safego_test.TestCall") {
			t.Fatalf("logged %+v, want the task, the value and a stack through the test", got[0])
		}
	})

	t.Run("panic(nil) is recovered too", func(t *testing.T) {
		err := safego.Call(log, "work", func() error { panic(nil) })
		var pe *safego.PanicError
		if !errors.As(err, &pe) {
			t.Fatalf("err=%v, want a *PanicError", err)
		}
	})
}

func index(s []int, i int) int { return s[i] }
