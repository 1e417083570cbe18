//go:build integration

package fusemount_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/pagewire/pagewire/engine"
	"github.com/pagewire/pagewire/fusemount"
	"github.com/pagewire/pagewire/internal/safego"
	"github.com/pagewire/pagewire/internal/safego/safegotest"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
	"github.com/pagewire/pagewire/server"
)

// panickyWatch is a real storage client whose watch stream panics on its
// second Recv, as a bug handling a change would.
type panickyWatch struct{ storagev1.StorageServiceClient }

func (p panickyWatch) WatchFiles(ctx context.Context, req *storagev1.WatchFilesRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[storagev1.WatchFilesResponse], error) {
	s, err := p.StorageServiceClient.WatchFiles(ctx, req, opts...)
	return &panickyStream{ServerStreamingClient: s}, err
}

type panickyStream struct {
	grpc.ServerStreamingClient[storagev1.WatchFilesResponse]
	n int
}

func (s *panickyStream) Recv() (*storagev1.WatchFilesResponse, error) {
	if s.n++; s.n > 1 {
		panic("watch exploded")
	}
	return s.ServerStreamingClient.Recv()
}

// A panic in the mount's watch ends Run with it, and the mount is gone:
// without its watch the kernel would serve stale pages.
func TestMount_WatchPanicEndsRun(t *testing.T) {
	rec := safegotest.NewRecorder()
	scfg := engine.DefaultStoreConfig()
	scfg.Dir, scfg.Logger = t.TempDir(), rec.Logger()
	store, err := engine.OpenStore(scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	cfg := server.DefaultConfig()
	cfg.Store, cfg.Logger, cfg.Node = store, rec.Logger(), server.NodeInfo{Hostname: "node1"}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stopServer := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Run(sctx) }()
	t.Cleanup(func() { stopServer(); <-served })

	dir := filepath.Join(t.TempDir(), "mnt")
	mcfg := fusemount.DefaultConfig()
	mcfg.Dir, mcfg.Logger = dir, rec.Logger()
	mcfg.Storage = panickyWatch{storagev1.NewStorageServiceClient(srv.Conn())}
	mnt, err := fusemount.New(mcfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = mnt.Run(ctx) // returns on its own: ctx is only a safety net
	t.Cleanup(func() {
		if mounted(dir) { // leave no mount behind, even if the test fails
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	var pe *safego.PanicError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "watch exploded") {
		t.Fatalf("Run: %v, want the watch's panic", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Run returned only when ctx ended")
	}
	if mounted(dir) {
		t.Fatalf("%s is still mounted after Run returned", dir)
	}
	if got := rec.Panics(); len(got) != 1 || got[0].Task != "watch the storage server" {
		t.Fatalf("logged %+v, want the watch's panic", got)
	}
}

// mounted reports whether dir is a mount point, from /proc/mounts.
func mounted(dir string) bool {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == dir {
			return true
		}
	}
	return false
}
