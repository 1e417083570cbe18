package fusemount

import (
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/pagewire/pagewire/internal/safego/safegotest"
)

// go-fuse recovers a panic in a FUSE operation and calls the mount's
// PanicHandler: the app gets EIO, and the panic is logged with slog and
// its stack like every recovered panic.
func TestMount_PanicHandler(t *testing.T) {
	rec := safegotest.NewRecorder()
	m := &Mount{log: rec.Logger()}
	if got := m.options().PanicHandler("op exploded"); got != fuse.EIO {
		t.Fatalf("status %v, want EIO", got)
	}
	if got := rec.Panics(); len(got) != 1 || got[0].Value != "op exploded" || got[0].Stack == "" {
		t.Fatalf("logged %+v, want the panic with a stack", got)
	}
}
