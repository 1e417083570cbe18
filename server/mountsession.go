package server

import (
	"sync"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/wire"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
)

// mountSession is the server's one mount: every listener's StorageService
// shares it, so a mount in process and one on the socket exclude each
// other. A second mount of the same files would have its own kernel's
// POSIX locks, which SQLite's locking needs to be one set.
type mountSession struct {
	mu     sync.Mutex                  // guards holder
	holder *storagev1.HoldMountRequest // nil: free
}

// take holds the session for req, or returns a MountedError naming the
// mount that holds it.
func (m *mountSession) take(req *storagev1.HoldMountRequest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h := m.holder; h != nil {
		return &pagewire.MountedError{Hostname: h.GetHostname(), PID: int(h.GetPid()), Dir: h.GetDir()}
	}
	m.holder = req
	return nil
}

// free releases the session req holds.
func (m *mountSession) free(req *storagev1.HoldMountRequest) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.holder == req {
		m.holder = nil
	}
}

// HoldMount holds the mount session until the stream ends: the mount
// stopped, or its process or connection died.
func (s *storageService) HoldMount(req *storagev1.HoldMountRequest, stream storagev1.StorageService_HoldMountServer) error {
	if err := s.mounts.take(req); err != nil {
		return wire.ToStatus(err)
	}
	defer s.mounts.free(req)
	if err := stream.Send(&storagev1.HoldMountResponse{}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}
