package fusemount

import (
	"os"
	"strconv"
	"syscall"
)

// closeOnExecDevFuse marks this process's /dev/fuse descriptors
// close-on-exec. go-fuse's DirectMount leaves the descriptor inheritable
// (v2.12.1: mountDirect returns before the CloseOnExec call the fusermount
// path makes), so every child the node starts — the app, the apply worker —
// would hold the FUSE connection open: a node killed -9 would then leave its
// mount hung instead of failed, and a child blocked on the mount could never
// finish dying.
func closeOnExecDevFuse() error {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range entries {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || target != "/dev/fuse" {
			continue
		}
		if fd, err := strconv.Atoi(e.Name()); err == nil {
			syscall.CloseOnExec(fd)
		}
	}
	return nil
}
