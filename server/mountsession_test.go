package server_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/pagewire/pagewire"
	client "github.com/pagewire/pagewire/clients/go"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
	"github.com/pagewire/pagewire/server"
)

// holdMount takes the mount session through storage and returns the
// stream's cancel; err is the refusal, if any.
func holdMount(t *testing.T, storage storagev1.StorageServiceClient, req *storagev1.HoldMountRequest) (context.CancelFunc, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := storage.HoldMount(ctx, req)
	if err == nil {
		_, err = stream.Recv()
	}
	if err != nil {
		cancel()
		return nil, err
	}
	return cancel, nil
}

// The server serves one mount at a time, whichever listener each comes
// through: a second is refused naming the first, and once the first's
// stream ends the session is free.
func TestServer_HoldMount(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "storage.sock")
	_, srv, _ := startServerWith(t, func(c *server.Config) { c.StorageSocket = sock })
	socket, inproc := storagev1.NewStorageServiceClient(dialSocket(t, sock)), storagev1.NewStorageServiceClient(srv.Conn())
	first := &storagev1.HoldMountRequest{Hostname: "app1", Pid: 42, Dir: "/litefs"}
	release, err := holdMount(t, socket, first)
	if err != nil {
		t.Fatalf("first mount: %v", err)
	}

	// A second mount, on either listener, is refused with the first's name.
	for _, c := range []storagev1.StorageServiceClient{socket, inproc} {
		_, err := holdMount(t, c, &storagev1.HoldMountRequest{Hostname: "app2", Pid: 7, Dir: "/mnt"})
		var me *pagewire.MountedError
		if !errors.As(client.Error(err), &me) || !errors.Is(client.Error(err), pagewire.ErrMounted) {
			t.Fatalf("second mount: %v, want a MountedError", err)
		}
		if got, want := *me, (pagewire.MountedError{Hostname: "app1", PID: 42, Dir: "/litefs"}); got != want {
			t.Fatalf("the refusal names %+v, want %+v", got, want)
		}
	}

	// The first mount's stream ends: another may mount.
	release()
	waitFor(t, func() bool {
		release, err := holdMount(t, inproc, &storagev1.HoldMountRequest{Hostname: "app2", Pid: 7, Dir: "/mnt"})
		if err == nil {
			release()
		}
		return err == nil
	})
}
