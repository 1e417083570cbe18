package fusemount

import (
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCloseOnExecDevFuse(t *testing.T) {
	fd, err := syscall.Open("/dev/fuse", os.O_RDWR, 0) // as go-fuse's DirectMount does: inheritable
	if err != nil {
		t.Skipf("no /dev/fuse here: %v", err)
	}
	defer syscall.Close(fd)
	if err := closeOnExecDevFuse(); err != nil {
		t.Fatal(err)
	}
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.FD_CLOEXEC == 0 {
		t.Fatal("/dev/fuse descriptor is still inherited by children")
	}
}
