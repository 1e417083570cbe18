package wire

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
)

// hangingStorage is a storage server whose ListFiles never answers.
type hangingStorage struct {
	storagev1.UnimplementedStorageServiceServer
}

func (hangingStorage) ListFiles(ctx context.Context, _ *storagev1.ListFilesRequest) (*storagev1.ListFilesResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// A call to a storage server that hangs fails at DialSocket's timeout: a
// mount's app gets EIO, not a hang.
func TestDialSocket_CallsHaveADeadline(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	storagev1.RegisterStorageServiceServer(gs, hangingStorage{})
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()

	conn, err := DialSocket(sock, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	done := make(chan error, 1)
	go func() {
		_, err := storagev1.NewStorageServiceClient(conn).ListFiles(context.Background(), &storagev1.ListFilesRequest{})
		done <- err
	}()
	select {
	case err := <-done:
		if got, want := status.Code(err), codes.DeadlineExceeded; got != want {
			t.Fatalf("err=%v, want %v", err, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a call to a hanging storage server did not return")
	}
	if _, err := DialSocket(sock, 0); err == nil {
		t.Fatal("DialSocket with no timeout: nil error")
	}
}
