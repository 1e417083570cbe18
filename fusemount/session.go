package fusemount

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"

	"github.com/pagewire/pagewire"
	client "github.com/pagewire/pagewire/clients/go"
	"github.com/pagewire/pagewire/internal/backoff"
	"github.com/pagewire/pagewire/internal/logkey"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
)

// session is the mount's hold on the storage server's one mount session
// (StorageService.HoldMount). It gates the FUSE operations: while the
// session is lost (the server went away, or restarted) they fail with EIO
// at once rather than wait, and a handle opened in an earlier session
// fails with EIO for good, since the server that knew of it is gone.
type session struct {
	mu  sync.Mutex // guards gen, up
	gen uint64     // how many sessions the mount has held
	up  bool       // a session is held now
}

// current returns the session a new handle belongs to, or EIO if none is
// held.
func (s *session) current() (uint64, syscall.Errno) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.up {
		return 0, syscall.EIO
	}
	return s.gen, 0
}

// check returns EIO while no session is held, or if fh (nil: none) was
// opened in an earlier session.
func (s *session) check(fh fs.FileHandle) syscall.Errno {
	gen, errno := s.current()
	if errno != 0 {
		return errno
	}
	if h, ok := fh.(*handle); ok && h.gen != gen {
		return syscall.EIO
	}
	return 0
}

// set marks the session held (a new one) or lost.
func (s *session) set(up bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if up {
		s.gen++
	}
	s.up = up
}

// holdSession takes the server's mount session and returns its stream,
// which holds it until ctx is done or the stream breaks. It returns a
// *pagewire.MountedError at once if another mount holds it, and waits
// for a server that cannot be reached yet.
func (m *Mount) holdSession(ctx context.Context) (storagev1.StorageService_HoldMountClient, error) {
	host := os.Getenv("HOSTNAME") // as the node names itself: Docker and Fly set it
	if host == "" {
		host, _ = os.Hostname()
	}
	req := &storagev1.HoldMountRequest{Hostname: host, Pid: int64(os.Getpid()), Dir: m.cfg.Dir}
	retry := backoff.New(100*time.Millisecond, 2*time.Second)
	for {
		stream, err := m.cfg.Storage.HoldMount(ctx, req)
		if err == nil {
			_, err = stream.Recv()
		}
		if err == nil {
			return stream, nil
		}
		err = client.Error(err)
		if errors.Is(err, pagewire.ErrMounted) || ctx.Err() != nil {
			return nil, err
		}
		wait := retry.Next()
		m.log.Warn("cannot reach the storage server; retrying", logkey.Error, err, logkey.RetryIn, wait)
		if !backoff.Sleep(ctx, wait) {
			return nil, ctx.Err()
		}
	}
}

// keepSession waits for the session's stream to break, then fails every
// operation and takes the session again, until ctx is done.
func (m *Mount) keepSession(ctx context.Context, root *rootNode, stream storagev1.StorageService_HoldMountClient) {
	for {
		// Recv returns only when the stream ends: the server went away.
		_, err := stream.Recv()
		if ctx.Err() != nil {
			return
		}
		m.sess.set(false)
		m.forget(root, false)
		m.log.Warn("lost the storage server: open files fail with EIO until it is back, and files opened before for good", logkey.Error, err)
		if stream, err = m.holdSession(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			// Another mount took the session while this one was away.
			m.log.Error("the storage server is back but serves another mount; this mount fails every operation until it is stopped", logkey.Error, err)
			<-ctx.Done()
			return
		}
		m.forget(root, true)
		m.sess.set(true)
		m.log.Info("the storage server is back: new opens work", logkey.Dir, m.cfg.Dir)
	}
}

// forget drops what the kernel cached of every file: names, and content
// that a restarted server may no longer have. Without withSHM, a -shm's
// content stays: a process that has it mapped would get SIGBUS rather
// than EIO on its next touch, and while the server is away nothing can
// change it.
func (m *Mount) forget(root *rootNode, withSHM bool) {
	for name, child := range root.Children() {
		if withSHM || !strings.HasSuffix(name, "-shm") {
			_ = child.NotifyContent(0, 0) // 0: to the end; ENOENT: nothing cached
		}
		_ = root.NotifyEntry(name)
	}
}
