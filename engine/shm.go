package engine

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

func (b *shmBuf) writeAt(p []byte, off int64) int64 {
	if end := off + int64(len(p)); end > int64(len(b.data)) {
		b.data = append(b.data, make([]byte, end-int64(len(b.data)))...)
	}
	copy(b.data[off:], p)
	return int64(len(b.data))
}

func (b *shmBuf) truncate(size int64) {
	if size <= int64(len(b.data)) {
		b.data = b.data[:size]
		return
	}
	b.data = append(b.data, make([]byte, size-int64(len(b.data)))...)
}
