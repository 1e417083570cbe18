package fusemount

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
)

// unreachableStorage is a storage client whose server never answers: each
// HoldMount waits for its context, as a call to a server still starting.
type unreachableStorage struct {
	storagev1.StorageServiceClient
	calls chan struct{}
}

func (u *unreachableStorage) HoldMount(ctx context.Context, _ *storagev1.HoldMountRequest, _ ...grpc.CallOption) (storagev1.StorageService_HoldMountClient, error) {
	select {
	case u.calls <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestRun_StoppedBeforeMounted checks that a mount stopped while it waits
// for the storage server's session returns nil, as a node told to stop
// during startup must exit 0 (TestMount_SignalDuringStartup's race).
func TestRun_StoppedBeforeMounted(t *testing.T) {
	cfg := DefaultConfig()
	st := &unreachableStorage{calls: make(chan struct{}, 1)}
	cfg.Dir, cfg.Storage = filepath.Join(t.TempDir(), "mnt"), st
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	<-st.calls
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run stopped before mounting = %v, want nil", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return after its context was canceled")
	}
	select {
	case <-m.Ready():
		t.Fatal("Ready closed although nothing was mounted")
	default:
	}
}
