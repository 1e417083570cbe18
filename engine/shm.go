package engine

import (
	"fmt"

	"github.com/pagewire/pagewire"
)

// maxSHMSize bounds a -shm file. SQLite's wal-index grows by one 32 KiB
// block per 4096 WAL frames, so 1 GiB indexes 128 Mi frames: a WAL of
// 512 GiB at 4 KiB pages. A write or truncate past it from the mount is
// refused rather than allocated.
const maxSHMSize = 1 << 30

// shmBuf is a -shm file's content. It lives in memory only: SQLite rebuilds
// the wal-index whenever no process has it open, so it is never worth a
// disk write. Its database's mu guards it.
type shmBuf struct {
	data []byte
}

func (b *shmBuf) readAt(p []byte, off int64) int {
	if off >= int64(len(b.data)) {
		return 0
	}
	return copy(p, b.data[off:])
}

// writeAt writes p at off, growing the buffer, and returns its new size.
func (b *shmBuf) writeAt(p []byte, off int64) (int64, error) {
	if off > maxSHMSize || int64(len(p)) > maxSHMSize-off {
		return 0, fmt.Errorf("%w: a write of %d bytes at offset %d of a -shm file: a wal-index is at most %d bytes", pagewire.ErrInvalidArgument, len(p), off, maxSHMSize)
	}
	if end := off + int64(len(p)); end > int64(len(b.data)) {
		b.data = append(b.data, make([]byte, end-int64(len(b.data)))...)
	}
	copy(b.data[off:], p)
	return int64(len(b.data)), nil
}

func (b *shmBuf) truncate(size int64) error {
	if size > maxSHMSize {
		return fmt.Errorf("%w: truncating a -shm file to %d bytes: a wal-index is at most %d bytes", pagewire.ErrInvalidArgument, size, maxSHMSize)
	}
	if size <= int64(len(b.data)) {
		b.data = b.data[:size]
		return nil
	}
	b.data = append(b.data, make([]byte, size-int64(len(b.data)))...)
	return nil
}
