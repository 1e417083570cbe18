package faultfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
)

// undoPage is the granularity of the saved durable bytes of a file.
const undoPage = 4096

// fileRec is what is durable of a regular file that changed since it was
// last fsynced (or since the mount): its size, and the durable bytes of
// every page written or truncated since.
type fileRec struct {
	size int64
	undo map[int64][]byte // page index → durable bytes (clipped at size)
}

// save keeps the durable bytes of the pages that [from, to) touches, from
// fd, before they change.
func (r *fileRec) save(fd int, from, to int64) error {
	if to > r.size {
		to = r.size
	}
	if from < 0 {
		from = 0
	}
	for p := from / undoPage; p*undoPage < to; p++ {
		if _, ok := r.undo[p]; ok {
			continue
		}
		buf := make([]byte, min(undoPage, r.size-p*undoPage))
		// A page beyond the live end was saved by the truncation that cut
		// it, so a short read only happens when the file changed behind
		// the mount's back; what is missing reads as zeros.
		for done := 0; done < len(buf); {
			n, err := syscall.Pread(fd, buf[done:], p*undoPage+int64(done))
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				return err
			}
			if n == 0 {
				break
			}
			done += n
		}
		if r.undo == nil {
			r.undo = make(map[int64][]byte)
		}
		r.undo[p] = buf
	}
	return nil
}

// changed reports whether anything written since the last fsync would be
// undone.
func (r *fileRec) changed(liveSize int64) bool { return len(r.undo) > 0 || r.size != liveSize }

// revert puts path back to the durable content.
func (r *fileRec) revert(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(r.size); err != nil {
		return err
	}
	for p, b := range r.undo {
		if _, err := f.WriteAt(b, p*undoPage); err != nil {
			return err
		}
	}
	return f.Close()
}

// dirRec is the durable entries of a folder that changed since the mount:
// name → backing inode number.
type dirRec struct {
	durable map[string]uint64
}

// state is the model: what is durable of every inode that changed since
// the mount. Inodes are named by their backing inode numbers, which stay
// unique because an inode that some folder still names durably is kept
// alive (in the grave) after its last live name goes.
type state struct {
	mu     sync.Mutex
	root   string // the backing directory
	grave  string // where unlinked but durably named inodes live, as grave/<ino>
	files  map[uint64]*fileRec
	dirs   map[uint64]*dirRec
	refs   map[uint64]int  // durable names of each inode, in folders with a dirRec
	graved map[uint64]bool // inodes with a name in grave
	// cut: a power cut began; every change fails with EIO from now on.
	cut bool

	fsyncDelay atomic.Int64 // how long a file's fsync takes, in ns
}

func newState(root, grave string) *state {
	return &state{root: root, grave: grave, files: map[uint64]*fileRec{}, dirs: map[uint64]*dirRec{},
		refs: map[uint64]int{}, graved: map[uint64]bool{}}
}

func lstatIno(path string) (syscall.Stat_t, error) {
	var st syscall.Stat_t
	err := syscall.Lstat(path, &st)
	return st, err
}

// list reads a folder's live entries.
func list(path string) (map[string]uint64, error) {
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	m := make(map[string]uint64, len(entries))
	for _, e := range entries {
		st, err := lstatIno(filepath.Join(path, e.Name()))
		if err != nil {
			return nil, err
		}
		m[e.Name()] = st.Ino
	}
	return m, nil
}

// dir returns the record of the folder at path, first noting its entries
// as durable if it has none yet (it has not changed since the mount).
// Call it before the folder changes. s.mu is held.
func (s *state) dir(path string) (*dirRec, error) {
	st, err := lstatIno(path)
	if err != nil {
		return nil, err
	}
	if d := s.dirs[st.Ino]; d != nil {
		return d, nil
	}
	m, err := list(path)
	if err != nil {
		return nil, err
	}
	for _, ino := range m {
		s.refs[ino]++
	}
	d := &dirRec{durable: m}
	s.dirs[st.Ino] = d
	return d, nil
}

// file returns the record of the regular file open as fd, making one from
// its current size if it has none (nothing changed since the mount or the
// last fsync). s.mu is held.
func (s *state) file(fd int) (*fileRec, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if r := s.files[st.Ino]; r != nil {
		return r, nil
	}
	r := &fileRec{size: st.Size}
	s.files[st.Ino] = r
	return r, nil
}

// syncFile makes the file open as fd durable as it is now.
func (s *state) syncFile(fd int) error {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return err
	}
	delete(s.files, st.Ino)
	return nil
}

// syncDir makes the folder's live entries its durable ones.
func (s *state) syncDir(path string) error {
	st, err := lstatIno(path)
	if err != nil {
		return err
	}
	m, err := list(path)
	if err != nil {
		return err
	}
	old := s.dirs[st.Ino]
	for _, ino := range m {
		s.refs[ino]++
	}
	s.dirs[st.Ino] = &dirRec{durable: m}
	if old != nil {
		for _, ino := range old.durable {
			s.unref(ino)
		}
	}
	return nil
}

// unref drops one durable name of ino; an inode in the grave that no
// folder names durably any more is gone for good.
func (s *state) unref(ino uint64) {
	if s.refs[ino]--; s.refs[ino] > 0 {
		return
	}
	delete(s.refs, ino)
	if s.graved[ino] {
		delete(s.graved, ino)
		_ = os.RemoveAll(s.gravePath(ino))
		s.forget(ino)
	}
}

// forget drops the records of an inode that no longer exists anywhere.
func (s *state) forget(ino uint64) {
	delete(s.files, ino)
	if d := s.dirs[ino]; d != nil {
		delete(s.dirs, ino)
		for _, c := range d.durable {
			s.unref(c)
		}
	}
}

func (s *state) gravePath(ino uint64) string {
	return filepath.Join(s.grave, strconv.FormatUint(ino, 10))
}

// bury keeps the inode at path alive in the grave if a folder names it
// durably, before its live name goes. It reports whether it did.
func (s *state) bury(path string, ino uint64, isDir bool) (bool, error) {
	if s.refs[ino] == 0 || s.graved[ino] {
		return false, nil
	}
	var err error
	if isDir {
		err = os.Rename(path, s.gravePath(ino))
	} else {
		err = os.Link(path, s.gravePath(ino))
	}
	if err != nil {
		return false, err
	}
	s.graved[ino] = true
	return true, nil
}

// unbury undoes bury after the live change it prepared failed: a folder
// goes back to path, a file's extra name goes.
func (s *state) unbury(ino uint64, path string, isDir bool) {
	if isDir {
		_ = os.Rename(s.gravePath(ino), path)
	} else {
		_ = os.Remove(s.gravePath(ino))
	}
	delete(s.graved, ino)
}

// Report says what a power cut dropped and brought back.
type Report struct {
	FilesReverted int // files whose content or size went back to their last fsync
	NamesDropped  int // names that were live and are gone
	NamesRestored int // names that were gone and are back
	// Changes lists each of them, e.g. "reverted dbs/x/wal: 8192 bytes
	// (was 12288, 3 pages rewritten)", "dropped dbs/x/meta".
	Changes []string
}

func (r Report) String() string {
	return fmt.Sprintf("%d files reverted, %d names dropped, %d names restored", r.FilesReverted, r.NamesDropped, r.NamesRestored)
}

// materialize rebuilds the backing directory as it is durably, in scratch
// (an empty folder on the same file system), then moves it into place.
// Nothing may be using the backing directory.
func (s *state) materialize(scratch string) (Report, error) {
	var rep Report
	// Where each inode lives now: its live name, or the grave.
	where := map[uint64]string{}
	live := map[string]bool{}
	err := filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := lstatIno(p)
		if err != nil {
			return err
		}
		if _, ok := where[st.Ino]; !ok {
			where[st.Ino] = p
		}
		if p != s.root {
			rel, _ := filepath.Rel(s.root, p)
			live[rel] = true
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	for ino := range s.graved {
		where[ino] = s.gravePath(ino)
	}

	rootSt, err := lstatIno(s.root)
	if err != nil {
		return rep, err
	}
	placed := map[uint64]string{} // regular files already placed in scratch
	durable := map[string]bool{}
	var build func(ino uint64, rel string, stack map[uint64]bool) error
	build = func(ino uint64, rel string, stack map[uint64]bool) error {
		var entries map[string]uint64
		if d := s.dirs[ino]; d != nil {
			entries = d.durable
		} else if entries, err = list(where[ino]); err != nil {
			return err
		}
		for name, c := range entries {
			crel := filepath.Join(rel, name)
			dst := filepath.Join(scratch, crel)
			durable[crel] = true
			if first, ok := placed[c]; ok {
				// A second durable name of a file already placed (moved
				// into one folder, its old folder never synced): a copy.
				if fi, err := os.Lstat(first); err != nil {
					return err
				} else if fi.Mode().IsRegular() {
					if err := copyFile(first, dst); err != nil {
						return err
					}
				}
				continue
			}
			src, ok := where[c]
			if !ok {
				return fmt.Errorf("faultfs: inode %d, durably %s, is nowhere: a bug in faultfs", c, crel)
			}
			st, err := lstatIno(src)
			if err != nil {
				return err
			}
			switch st.Mode & syscall.S_IFMT {
			case syscall.S_IFDIR:
				if stack[c] {
					continue // a loop of folders renamed into each other: drop it
				}
				if err := os.Mkdir(dst, os.FileMode(st.Mode&0o7777)); err != nil {
					return err
				}
				stack[c] = true
				err = build(c, crel, stack)
				delete(stack, c)
				if err != nil {
					return err
				}
			case syscall.S_IFREG:
				if err := os.Rename(src, dst); err != nil {
					return err
				}
				placed[c] = dst
				if r := s.files[c]; r != nil {
					if r.changed(st.Size) {
						rep.FilesReverted++
						rep.Changes = append(rep.Changes, fmt.Sprintf("reverted %s: %d bytes (was %d, %d pages rewritten)", crel, r.size, st.Size, len(r.undo)))
					}
					if err := r.revert(dst); err != nil {
						return err
					}
				}
			default:
				if err := os.Rename(src, dst); err != nil {
					return err
				}
				placed[c] = dst
			}
		}
		return nil
	}
	if err := build(rootSt.Ino, "", map[uint64]bool{rootSt.Ino: true}); err != nil {
		return rep, err
	}
	for p := range live {
		if !durable[p] {
			rep.NamesDropped++
			rep.Changes = append(rep.Changes, "dropped "+p)
		}
	}
	for p := range durable {
		if !live[p] {
			rep.NamesRestored++
			rep.Changes = append(rep.Changes, "restored "+p)
		}
	}
	sort.Strings(rep.Changes)

	// Swap: the backing directory keeps its own inode and mode.
	old, err := os.ReadDir(s.root)
	if err != nil {
		return rep, err
	}
	for _, e := range old {
		if err := os.RemoveAll(filepath.Join(s.root, e.Name())); err != nil {
			return rep, err
		}
	}
	fresh, err := os.ReadDir(scratch)
	if err != nil {
		return rep, err
	}
	for _, e := range fresh {
		if err := os.Rename(filepath.Join(scratch, e.Name()), filepath.Join(s.root, e.Name())); err != nil {
			return rep, err
		}
	}
	if err := os.RemoveAll(s.grave); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return rep, err
	}
	return rep, nil
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	st, err := os.Stat(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, st.Mode().Perm())
}
