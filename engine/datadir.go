package engine

import (
	"errors"
	"fmt"
	"syscall"
)

// dataDirError explains why data.dir could not be created or written,
// naming the fix: a read-only volume, or permissions.
func dataDirError(dir string, err error) error {
	switch {
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("data.dir %q is on a read-only filesystem: mount its volume read-write (in Docker, drop :ro from -v) or choose another data.dir", dir)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("data.dir %q is not writable (permission denied): fix its permissions or choose another data.dir", dir)
	}
	return fmt.Errorf("data.dir %q cannot be created: %w; fix its permissions or choose another data.dir", dir, err)
}

// dataDirInUse is the error for a data.dir another process holds.
func dataDirInUse(dir string) error {
	return fmt.Errorf("data.dir %q is in use by another pagewire process (another node or container on the same volume?): stop it, or give each node its own data.dir", dir)
}
