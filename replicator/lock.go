package replicator

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// SQLite's byte-range locks (SQLITE_NOTES §3, §7), taken with fcntl F_SETLK
// (never waiting) so that they conflict with SQLite clients in other
// processes. They are POSIX locks: per process, and all of the process's
// locks on a file go when any of its descriptors of that file is closed.
// These are the database file's; package wal has the -shm's (wal.LockWrite
// and on).
const (
	lockDBPending     = 0x40000000
	lockDBSharedFirst = lockDBPending + 2
	lockDBSharedSize  = 510
)

// errLockBusy: another process holds a conflicting lock.
var errLockBusy = errors.New("locked by another process")

// lockRange sets (typ F_RDLCK or F_WRLCK) or clears (F_UNLCK) a POSIX lock
// on n bytes at start, without waiting. It returns errLockBusy if another
// process holds a conflicting lock.
func lockRange(f *os.File, typ int16, start, n int64) error {
	lk := syscall.Flock_t{Type: typ, Whence: io.SeekStart, Start: start, Len: n}
	return lockFcntl(f, syscall.F_SETLK, &lk)
}

// lockHolder returns the type of a lock another process holds that would
// conflict with taking typ on n bytes at start, or F_UNLCK if none does.
func lockHolder(f *os.File, typ int16, start, n int64) (int16, error) {
	lk := syscall.Flock_t{Type: typ, Whence: io.SeekStart, Start: start, Len: n}
	if err := lockFcntl(f, syscall.F_GETLK, &lk); err != nil {
		return 0, err
	}
	return lk.Type, nil
}

func lockFcntl(f *os.File, cmd int, lk *syscall.Flock_t) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) {
		for {
			lerr = syscall.FcntlFlock(fd, cmd, lk)
			if lerr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	switch lerr {
	case nil:
		return nil
	case syscall.EAGAIN, syscall.EACCES:
		return errLockBusy
	default:
		return os.NewSyscallError("fcntl", lerr)
	}
}

// lockDBShared takes SQLite's SHARED lock on a database file as the unix VFS
// does: a read lock on the PENDING byte (which fails while another process
// is getting EXCLUSIVE), then on the 510-byte SHARED range, then releases
// PENDING.
func lockDBShared(db *os.File) error {
	if err := lockRange(db, syscall.F_RDLCK, lockDBPending, 1); err != nil {
		return err
	}
	err := lockRange(db, syscall.F_RDLCK, lockDBSharedFirst, lockDBSharedSize)
	if uerr := lockRange(db, syscall.F_UNLCK, lockDBPending, 1); err == nil {
		err = uerr
	}
	return err
}

// lockShm takes n -shm lock bytes from off exclusively, or shared.
func lockShm(shm *os.File, off int64, n int64, exclusive bool) error {
	typ := int16(syscall.F_RDLCK)
	if exclusive {
		typ = syscall.F_WRLCK
	}
	return lockRange(shm, typ, off, n)
}

// unlockShm releases n -shm lock bytes from off.
func unlockShm(shm *os.File, off int64, n int64) error {
	return lockRange(shm, syscall.F_UNLCK, off, n)
}
