package fusemount

import (
	"context"
	"errors"
	"syscall"

	client "github.com/pagewire/pagewire/clients/go"

	"github.com/pagewire/pagewire"
)

// toErrno maps a storage call's error to the errno the app sees. It is the
// only place the mount chooses errnos.
func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	err = client.Error(err)
	switch {
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, pagewire.ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, pagewire.ErrReadOnly):
		return syscall.EROFS
	case errors.Is(err, pagewire.ErrNotWAL):
		return syscall.EACCES
	case errors.Is(err, pagewire.ErrInvalidName), errors.Is(err, pagewire.ErrInvalidArgument):
		return syscall.EINVAL
	case errors.Is(err, pagewire.ErrStale):
		return syscall.ESTALE
	case errors.Is(err, pagewire.ErrBusy):
		return syscall.EBUSY
	case errors.Is(err, pagewire.ErrTooMany):
		return syscall.EAGAIN
	default:
		return syscall.EIO
	}
}
