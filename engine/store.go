package engine

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/wal"
)

// FileInfo describes a file on the mount.
type FileInfo struct {
	Name     string
	ID       uint64
	Kind     pagewire.FileKind
	Size     int64
	ModTime  time.Time
	ReadOnly bool // the mount refuses writes
	Volatile bool // content changes on its own: the mount must not cache it
}

// DatabaseInfo describes a database.
type DatabaseInfo struct {
	Name        string
	Pos         pagewire.Pos
	PageSize    uint32
	PageCount   uint32
	OpenHandles int
	Commits     uint64 // transactions committed since the node started
	Err         error  // a problem found at startup, nil if none
}

// StoreConfig configures a Store.
type StoreConfig struct {
	Dir    string       // data.dir; required
	Logger *slog.Logger // nil: slog.Default()
	// Retention is how long transaction logs keep records for replicas
	// that were away (data.retention).
	Retention time.Duration
	// MaxImportSize bounds the bytes of a database Import receives
	// (data.max-import-size); > 0.
	MaxImportSize int64
	// StreamTxnBytes bounds the memory a big transaction takes: a commit
	// of more bytes of pages than this is written to the transaction log
	// straight from the WAL, a buffer at a time, and read back from the
	// log a part at a time, never held whole. Must be > 0;
	// DefaultStoreConfig sets DefaultStreamTxnBytes.
	StreamTxnBytes int
	// SyncReplicas is how many replicas must acknowledge an app's commit
	// on the primary, durably, before it returns
	// (replication.sync-replicas); 0: commits don't wait (async).
	SyncReplicas int
	// SyncTimeout bounds a commit's wait for SyncReplicas replicas
	// (replication.sync-timeout): past it the commit returns, and the
	// database's commits go on without waiting until enough replicas have
	// caught up. 0: commits wait without limit. Must be >= 0;
	// DefaultStoreConfig sets DefaultSyncTimeout.
	SyncTimeout time.Duration
}

// DefaultSyncTimeout is replication.sync-timeout's default.
const DefaultSyncTimeout = 10 * time.Second

// DefaultStreamTxnBytes is StoreConfig.StreamTxnBytes's default: what the
// transaction log keeps of recent transactions in memory anyway.
const DefaultStreamTxnBytes = defaultRecent

// DefaultRetention is data.retention's default, as LiteFS.
const DefaultRetention = 10 * time.Minute

// DefaultMaxImportSize is data.max-import-size's default: 32 GiB.
const DefaultMaxImportSize = 32 << 30

// leftoverPrefixes start the names of the temporary files and folders
// snapshots, imports and restores make in data.dir/dbs; they are renamed
// into place or removed when the operation ends.
var leftoverPrefixes = []string{".snapshot-", ".import-", ".restore-"}

// isLeftover reports whether a name in data.dir/dbs is a temporary one.
func isLeftover(name string) bool {
	for _, p := range leftoverPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// DefaultStoreConfig returns a StoreConfig with every optional value set;
// Dir is left to the caller.
func DefaultStoreConfig() StoreConfig {
	return StoreConfig{Retention: DefaultRetention, MaxImportSize: DefaultMaxImportSize, StreamTxnBytes: DefaultStreamTxnBytes, SyncTimeout: DefaultSyncTimeout}
}

// Validate reports the first missing or bad value.
func (c StoreConfig) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("data.dir is not set; set data.dir in the config")
	case c.Retention <= 0:
		return fmt.Errorf("data.retention %s must be more than 0; start from DefaultStoreConfig", c.Retention)
	case c.MaxImportSize <= 0:
		return fmt.Errorf("data.max-import-size %d must be more than 0 bytes; start from DefaultStoreConfig", c.MaxImportSize)
	case c.StreamTxnBytes <= 0:
		return fmt.Errorf("StreamTxnBytes %d must be more than 0; start from DefaultStoreConfig", c.StreamTxnBytes)
	case c.SyncReplicas < 0:
		return fmt.Errorf("replication.sync-replicas %d must be 0 (asynchronous) or more", c.SyncReplicas)
	case c.SyncTimeout < 0:
		return fmt.Errorf("replication.sync-timeout %s must be 0 (wait without limit) or more", c.SyncTimeout)
	}
	return nil
}

// Store owns data.dir: every database's files and positions, and the file
// handles the mount uses. It is safe for concurrent use.
type Store struct {
	dir       string
	log       *slog.Logger
	lock      *os.File // flock on data.dir/.lock: one node per data.dir
	retention time.Duration
	maxImport int64 // StoreConfig.MaxImportSize
	// streamTxnBytes is StoreConfig.StreamTxnBytes.
	streamTxnBytes int
	// syncReplicas and syncTimeout are StoreConfig's; sync counts the
	// waits (syncrep.go).
	syncReplicas int
	syncTimeout  time.Duration
	sync         syncStats

	nextID atomic.Uint64

	// watchMu guards watchers.
	watchMu  sync.Mutex
	watchers map[*Watcher]struct{}

	role atomic.Pointer[roleState] // read at every write, without mu
	// becamePrimary and becameReplica count role changes (metrics).
	becamePrimary, becameReplica atomic.Uint64
	// roleMu guards roleChanged, closed and replaced at each role change.
	roleMu      sync.Mutex
	roleChanged chan struct{}

	// mu guards dbs, files and dbsChanged.
	mu    sync.RWMutex
	dbs   map[string]*database
	files map[uint64]*fileRef
	// dbsChanged is closed and replaced when a database is created or
	// deleted.
	dbsChanged chan struct{}

	// exports and snapshots hold a token per export and replica's
	// snapshot running (view.go), up to their capacity.
	exports, snapshots chan struct{}
}

// fileRef is a file id the mount may hold. An id stays valid while the
// mount has it open, even after its file was deleted, as POSIX wants: the
// kernel writes back a deleted -shm's mmapped pages until the last munmap.
type fileRef struct {
	db   *database
	kind pagewire.FileKind
	shm  *shmBuf // the -shm's content, for kind FileSHM
	open int     // open handles; guarded by Store.mu
	gone bool    // deleted; the id goes when open reaches 0
}

type roleState struct {
	role  pagewire.Role
	ro    pagewire.ReadOnlyError // who the primary is, when not us
	epoch pagewire.Epoch         // the lease epoch of this node's role
	// until, on a primary, is when its lease could next expire unless
	// renewed (nil or zero: never). Writes are refused from then on even
	// if nothing has told the store yet, say because the process was
	// frozen: another node may hold the lease by then.
	until func() time.Time
}

// rootID is the mount root's inode number; file ids start above it.
const rootID = 1

// OpenStore opens (or initialises) data.dir and every database in it.
func OpenStore(cfg StoreConfig) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Store{dir: cfg.Dir, log: log.With(logkey.Component, "store"), dbs: map[string]*database{}, files: map[uint64]*fileRef{}, watchers: map[*Watcher]struct{}{}}
	s.dbsChanged = make(chan struct{})
	s.exports, s.snapshots = make(chan struct{}, maxExports), make(chan struct{}, maxSnapshots)
	s.nextID.Store(rootID + 1) // +1: the .primary file
	s.retention, s.maxImport, s.streamTxnBytes = cfg.Retention, cfg.MaxImportSize, cfg.StreamTxnBytes
	s.syncReplicas, s.syncTimeout = cfg.SyncReplicas, cfg.SyncTimeout

	// Take data.dir for this process alone.
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "dbs"), 0o755); err != nil {
		return nil, dataDirError(cfg.Dir, err)
	}
	// Folders just made are durable before a database is created in them:
	// dbs in data.dir, and data.dir in its parent.
	for _, dir := range []string{filepath.Join(cfg.Dir, "dbs"), cfg.Dir} {
		if err := syncDir(dir); err != nil {
			return nil, fmt.Errorf("data.dir %q cannot be made durable: %w; check the disk", cfg.Dir, err)
		}
	}
	_ = syncDir(filepath.Dir(filepath.Clean(cfg.Dir))) // may not be ours to open
	lock, err := os.OpenFile(filepath.Join(cfg.Dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, dataDirError(cfg.Dir, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, dataDirInUse(cfg.Dir)
	}
	s.lock = lock

	// Open every database found under data.dir/dbs.
	entries, err := os.ReadDir(filepath.Join(cfg.Dir, "dbs"))
	if err != nil {
		s.Close()
		return nil, err
	}
	for _, e := range entries {
		name := e.Name()
		if isLeftover(name) {
			// A snapshot, import or restore the last run did not finish.
			if err := os.RemoveAll(filepath.Join(cfg.Dir, "dbs", name)); err != nil {
				s.log.Warn("could not remove a leftover of an unfinished snapshot, import or restore", logkey.File, name, logkey.Error, err)
			} else {
				s.log.Info("removed a leftover of an unfinished snapshot, import or restore", logkey.File, name)
			}
			continue
		}
		if !e.IsDir() {
			continue
		}
		if err := pagewire.ValidateDBName(name); err != nil {
			s.log.Warn("ignoring a folder under data.dir/dbs that is not a database name", "folder", name)
			continue
		}
		d, err := openDatabase(filepath.Join(cfg.Dir, "dbs", name), name, s.dbOptions())
		if err != nil {
			s.Close()
			return nil, err
		}
		s.addLocked(d)
	}

	// A store starts out as the primary at epoch 1.
	s.role.Store(&roleState{role: pagewire.RolePrimary, epoch: 1})
	return s, nil
}

func (s *Store) newID() uint64 { return s.nextID.Add(1) }

func (s *Store) dbOptions() dbOptions {
	return dbOptions{log: s.log, newID: s.newID, retention: s.retention, streamTxnBytes: s.streamTxnBytes}
}

// addLocked registers a database's file ids. s.mu must be held (or s not
// yet shared).
func (s *Store) addLocked(d *database) {
	s.dbs[d.name] = d
	s.registerLocked(d)
}

// registerLocked adds ids for d's current files; s.mu must be held.
func (s *Store) registerLocked(d *database) {
	for kind, id := range map[pagewire.FileKind]uint64{
		pagewire.FileDatabase: d.ids.db, pagewire.FileWAL: d.ids.wal,
		pagewire.FileSHM: d.ids.shm, pagewire.FilePos: d.ids.pos,
	} {
		if id != 0 && s.files[id] == nil {
			ref := &fileRef{db: d, kind: kind}
			if kind == pagewire.FileSHM {
				ref.shm = d.shm
			}
			s.files[id] = ref
		}
	}
}

// unregister retires file ids whose files were deleted or replaced.
func (s *Store) unregister(ids ...uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if ref := s.files[id]; ref != nil {
			ref.gone = true
			if ref.open == 0 {
				delete(s.files, id)
			}
		}
	}
}

// Prune drops transaction log records older than retention; the node
// calls it periodically.
func (s *Store) Prune(now time.Time) {
	for _, name := range s.DatabaseNames() {
		if d, err := s.db(name); err == nil {
			d.txlog.prune(now)
		}
	}
}

// Close closes every database and releases data.dir.
func (s *Store) Close() error {
	s.mu.Lock()
	dbs := s.dbs
	s.dbs = map[string]*database{}
	s.files = map[uint64]*fileRef{}
	s.mu.Unlock()
	var errs []error
	for _, d := range dbs {
		d.mu.Lock()
		if d.wal != nil {
			errs = append(errs, d.wal.Sync())
		}
		errs = append(errs, d.saveMeta(true))
		if d.startupErr == nil {
			errs = append(errs, d.savePageSums())
		}
		d.closeFiles()
		d.deleted = true
		d.mu.Unlock()
	}
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
	return errors.Join(errs...)
}

// SetRole sets the node's role and lease epoch. On a replica, ro says who
// the primary is.
func (s *Store) SetRole(role pagewire.Role, ro pagewire.ReadOnlyError, epoch pagewire.Epoch) {
	s.swapRole(&roleState{role: role, ro: ro, epoch: epoch})
	if role == pagewire.RolePrimary {
		s.uncapAll(epoch)
	}
	s.roleChange()
}

// swapRole makes next the role state and counts a change of role.
func (s *Store) swapRole(next *roleState) {
	if prev := s.role.Swap(next); prev == nil || prev.role != next.role {
		if next.role == pagewire.RolePrimary {
			s.becamePrimary.Add(1)
		} else {
			s.becameReplica.Add(1)
		}
	}
}

// RoleChanges returns how many times the node became the primary and how
// many times it became a replica since the store was opened (a store
// opens as the primary, uncounted).
func (s *Store) RoleChanges() (toPrimary, toReplica uint64) {
	return s.becamePrimary.Load(), s.becameReplica.Load()
}

// NamePrimary names the primary as it calls itself: hostname, as a
// replica hears it from the primary of lease epoch that it follows. The
// name the node was told (a static replica's lease.hostname, which a
// config may set to the replica's own name) then gives way to the
// primary's own, in .primary, GET /primary and read-only errors. It
// changes nothing and returns false unless this node is a replica that
// knows its primary, at an epoch no newer than epoch: a name heard from
// an older primary, or after the role changed, is dropped.
func (s *Store) NamePrimary(epoch pagewire.Epoch, hostname string) bool {
	for {
		st := s.role.Load()
		if hostname == "" || st.role != pagewire.RoleReplica || st.ro.Primary == "" || st.epoch > epoch || st.ro.Primary == hostname {
			return false
		}
		next := *st
		next.ro.Primary = hostname
		if s.role.CompareAndSwap(st, &next) {
			s.roleChange()
			return true
		}
	}
}

// databases returns the store's databases as they are now.
func (s *Store) databases() []*database {
	s.mu.RLock()
	defer s.mu.RUnlock()
	dbs := make([]*database, 0, len(s.dbs))
	for _, d := range s.dbs {
		dbs = append(dbs, d)
	}
	return dbs
}

// uncapAll lets replicas have what the app was told failed in epochs before
// epoch (durable.go): this node is the primary of epoch, with those
// transactions in its history.
func (s *Store) uncapAll(epoch pagewire.Epoch) {
	dbs := s.databases()
	for _, d := range dbs {
		d.mu.Lock()
		d.uncap(epoch)
		d.mu.Unlock()
	}
}

// RoleChanged returns a channel closed at the next role change.
func (s *Store) RoleChanged() <-chan struct{} {
	s.roleMu.Lock()
	defer s.roleMu.Unlock()
	if s.roleChanged == nil {
		s.roleChanged = make(chan struct{})
	}
	return s.roleChanged
}

func (s *Store) roleChange() {
	s.roleMu.Lock()
	if s.roleChanged != nil {
		close(s.roleChanged)
	}
	s.roleChanged = make(chan struct{})
	s.roleMu.Unlock()
	// .primary appears or goes: the kernel must not answer from a cached
	// (negative) entry.
	s.notify(FileChange{Name: pagewire.PrimaryFileName, ID: rootID + 1, Entry: true})
}

// SetPrimaryUntil makes the node primary at epoch for as long as until
// (called at each write) says the lease is held: writes are refused from
// the time it returns on. A zero time means no deadline.
func (s *Store) SetPrimaryUntil(epoch pagewire.Epoch, until func() time.Time) {
	s.swapRole(&roleState{role: pagewire.RolePrimary, epoch: epoch, until: until})
	s.uncapAll(epoch)
	s.roleChange()
}

// Epoch is the lease epoch of the node's role.
func (s *Store) Epoch() pagewire.Epoch {
	return s.role.Load().epoch
}

// SendsAs reports whether this node sends its transactions to replicas,
// and as the primary of which lease epoch. The primary does; so does a
// primary that stepped down to hand off, which keeps its epoch until a new
// primary is known and keeps serving its last transactions so that
// candidates catch up before taking over. Any other node returns a
// *pagewire.ReadOnlyError naming the primary.
func (s *Store) SendsAs() (pagewire.Epoch, error) {
	st := s.role.Load() // role, primary and epoch from one change
	handingOff := st.role == pagewire.RoleReplica && st.ro.Primary == "" && st.epoch > 0
	if st.role != pagewire.RolePrimary && !handingOff {
		ro := st.ro
		return 0, &ro
	}
	return st.epoch, nil
}

// DatabasesChanged returns a channel closed at the next database creation
// or deletion.
func (s *Store) DatabasesChanged() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.dbsChanged
}

// dbsChangedLocked wakes databasesChanged waiters; s.mu must be held.
func (s *Store) dbsChangedLocked() {
	close(s.dbsChanged)
	s.dbsChanged = make(chan struct{})
}

// db finds a database by name.
func (s *Store) db(name string) (*database, error) {
	if err := pagewire.ValidateDBName(name); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if d := s.dbs[name]; d != nil {
		return d, nil
	}
	return nil, fmt.Errorf("%w: database %q", pagewire.ErrNotFound, name)
}

// Role returns the node's role and, when not primary, who the primary is.
func (s *Store) Role() (pagewire.Role, pagewire.ReadOnlyError) {
	r := s.role.Load()
	return r.role, r.ro
}

// RoleEpoch is Role and Epoch read together, from one role change.
func (s *Store) RoleEpoch() (pagewire.Role, pagewire.ReadOnlyError, pagewire.Epoch) {
	r := s.role.Load()
	return r.role, r.ro, r.epoch
}

// Writer says who writes a file, which decides whether the write is
// allowed and what a commit it completes stands for.
type Writer int

const (
	// App is an app writing through the mount. On a replica its writes
	// are refused, but for those of a client holding the database's halt
	// lock through the replica: each of its commits is committed on the
	// primary first.
	App Writer = iota
	// Applier is the node's own apply worker, applying the primary's
	// transactions on a replica. Its writes are taken whatever the role,
	// and its commits stay hidden from readers until the replicator
	// reports them visible.
	Applier
)

func (w Writer) String() string {
	if w == Applier {
		return "applier"
	}
	return "app"
}

// checkWritable refuses writes to databases on a replica, but for the
// node's own: a replica applying transactions.
func (s *Store) checkWritable(by Writer) error {
	if by == Applier {
		return nil
	}
	r := s.role.Load()
	if r.role != pagewire.RolePrimary {
		ro := r.ro
		return &ro
	}
	if r.until != nil {
		if d := r.until(); !d.IsZero() && !time.Now().Before(d) {
			return &pagewire.ReadOnlyError{} // the lease may have passed to another node
		}
	}
	return nil
}

// checkWritableDB is checkWritable for one database's files: a replica
// also takes the writes of a client holding the database's halt lock
// through it (a primary's own checks stand, whatever lock is left over).
func (s *Store) checkWritableDB(d *database, by Writer) error {
	err := s.checkWritable(by)
	if err != nil && s.role.Load().role != pagewire.RolePrimary && d.halted() {
		return nil
	}
	return err
}

// Lookup returns the file called name.
func (s *Store) Lookup(name string) (FileInfo, error) {
	dbName, kind, err := pagewire.ParseFileName(name)
	if err != nil {
		return FileInfo{}, err
	}
	if kind == pagewire.FilePrimary {
		return s.primaryInfo()
	}
	s.mu.RLock()
	d := s.dbs[dbName]
	s.mu.RUnlock()
	if d == nil {
		return FileInfo{}, fmt.Errorf("%w: %s", pagewire.ErrNotFound, name)
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.info(kind)
}

func (s *Store) primaryInfo() (FileInfo, error) {
	role, ro := s.Role()
	if role != pagewire.RoleReplica || ro.Primary == "" {
		return FileInfo{}, fmt.Errorf("%w: %s (this node is the primary)", pagewire.ErrNotFound, pagewire.PrimaryFileName)
	}
	return FileInfo{Name: pagewire.PrimaryFileName, ID: rootID + 1, Kind: pagewire.FilePrimary,
		Size: int64(len(ro.Primary) + 1), ModTime: time.Now(), ReadOnly: true, Volatile: true}, nil
}

// info describes one of d's files. d.mu must be held.
func (d *database) info(kind pagewire.FileKind) (FileInfo, error) {
	fi := FileInfo{Name: pagewire.FileName(d.name, kind), Kind: kind, ModTime: d.modTime[kind]}
	switch kind {
	case pagewire.FileDatabase:
		st, err := d.db.Stat()
		if err != nil {
			return fi, err
		}
		fi.ID, fi.Size = d.ids.db, st.Size()
	case pagewire.FileWAL:
		if d.wal == nil {
			return fi, fmt.Errorf("%w: %s", pagewire.ErrNotFound, fi.Name)
		}
		st, err := d.wal.Stat()
		if err != nil {
			return fi, err
		}
		fi.ID, fi.Size = d.ids.wal, st.Size()
	case pagewire.FileSHM:
		if d.shm == nil {
			return fi, fmt.Errorf("%w: %s", pagewire.ErrNotFound, fi.Name)
		}
		fi.ID, fi.Size = d.ids.shm, int64(len(d.shm.data))
	case pagewire.FilePos:
		fi.ID, fi.Size, fi.ReadOnly, fi.Volatile = d.ids.pos, int64(len(posContent(d.visiblePos()))), true, true
	case pagewire.FileJournal:
		return fi, fmt.Errorf("%w: %s", pagewire.ErrNotFound, fi.Name)
	}
	return fi, nil
}

func posContent(p pagewire.Pos) string { return p.String() + "\n" }

// Create creates the file called name, or returns it if it exists. A new
// database is an empty database in WAL mode at TXID 1. A -journal is refused:
// pagewire keeps every database in WAL mode.
func (s *Store) Create(name string, by Writer) (FileInfo, error) {
	dbName, kind, err := pagewire.ParseFileName(name)
	if err != nil {
		return FileInfo{}, err
	}

	// Files that must not be created: a journal, pagewire's own.
	switch kind {
	case pagewire.FileJournal:
		err := fmt.Errorf("%w: refusing to create %s: a rollback journal would take %q out of WAL mode; keep PRAGMA journal_mode=WAL", pagewire.ErrNotWAL, name, dbName)
		s.log.Warn("refused to leave WAL mode", logkey.DB, dbName, logkey.Error, err)
		return FileInfo{}, err
	case pagewire.FilePos, pagewire.FilePrimary:
		return FileInfo{}, fmt.Errorf("%w: %s is a read-only pagewire file", pagewire.ErrInvalidArgument, name)
	}

	// A reader needs the -wal and -shm to exist, even on a replica whose
	// copy came from a snapshot and has had no transaction since: creating
	// them empty changes no data.
	if kind == pagewire.FileDatabase {
		if err := s.checkWritable(by); err != nil {
			if fi, lerr := s.Lookup(name); lerr == nil {
				return fi, nil // opening an existing file with O_CREAT is a read
			}
			return FileInfo{}, err
		}
	}

	// A new database, for a database file.
	s.mu.Lock()
	d := s.dbs[dbName]
	if d == nil {
		if kind != pagewire.FileDatabase {
			s.mu.Unlock()
			return FileInfo{}, fmt.Errorf("%w: database %s does not exist", pagewire.ErrNotFound, dbName)
		}
		d, err = createDatabase(filepath.Join(s.dir, "dbs", dbName), dbName, defaultPageSize, s.dbOptions())
		if err != nil {
			s.mu.Unlock()
			return FileInfo{}, err
		}
		if err := syncDir(filepath.Join(s.dir, "dbs")); err != nil {
			s.mu.Unlock()
			return FileInfo{}, err
		}
		s.addLocked(d)
		s.dbsChangedLocked()
		s.log.Info("created database", logkey.DB, dbName)
		// The kernel may remember that <db>-pos did not exist.
		defer s.notify(FileChange{Name: pagewire.FileName(dbName, pagewire.FilePos), Entry: true})
	}
	s.mu.Unlock()

	// The database's -wal or -shm, if it has none.
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.deleted {
		return FileInfo{}, fmt.Errorf("%w: %s was deleted meanwhile", pagewire.ErrNotFound, name)
	}

	// Create the -wal on disk, or the -shm in memory.
	switch kind {
	case pagewire.FileWAL:
		if d.wal == nil {
			f, err := os.OpenFile(filepath.Join(d.dir, walFileName), os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				return FileInfo{}, err
			}
			d.wal = f
			d.walDirUnsynced = true
			d.ids.wal = s.newID()
			d.modTime[kind] = time.Now()
			s.register(d)
		}
	case pagewire.FileSHM:
		if d.shm == nil {
			d.shm = &shmBuf{}
			d.ids.shm = s.newID()
			d.modTime[kind] = time.Now()
			s.register(d)
		}
	}
	return d.info(kind)
}

func (s *Store) register(d *database) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.registerLocked(d)
}

// Delete removes the file called name. Deleting a database removes its
// folder under data.dir.
func (s *Store) Delete(name string) error {
	dbName, kind, err := pagewire.ParseFileName(name)
	if err != nil {
		return err
	}

	// Find the database; journals and the .primary file cannot be deleted.
	s.mu.RLock()
	d := s.dbs[dbName]
	s.mu.RUnlock()
	if d == nil || kind == pagewire.FileJournal || kind == pagewire.FilePrimary {
		return fmt.Errorf("%w: %s", pagewire.ErrNotFound, name)
	}

	// The -pos file cannot be deleted; the -shm is dropped from memory.
	switch kind {
	case pagewire.FilePos:
		return fmt.Errorf("%w: %s is a read-only pagewire file", pagewire.ErrInvalidArgument, name)
	case pagewire.FileSHM:
		d.mu.Lock()
		id := d.ids.shm
		d.shm, d.ids.shm = nil, 0
		d.mu.Unlock()
		if id == 0 {
			return fmt.Errorf("%w: %s", pagewire.ErrNotFound, name)
		}
		s.unregister(id)
		return nil
	}

	// Deleting the -wal or the database needs a writable node.
	if err := s.checkWritable(App); err != nil {
		return err
	}

	// A -wal goes alone; the database file takes its whole folder.
	switch kind {
	case pagewire.FileWAL:
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.wal == nil {
			return fmt.Errorf("%w: %s", pagewire.ErrNotFound, name)
		}
		// The meta records the generation's end durably before the
		// unlink can become durable.
		if err := d.syncMetaEnd(); err != nil {
			return err
		}
		d.wal.Close()
		s.unregister(d.ids.wal)
		d.wal, d.ids.wal = nil, 0
		d.walDirUnsynced = false
		if err := os.Remove(filepath.Join(d.dir, walFileName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		d.resetWAL()
		d.forgetFull()
		return nil
	}
	return s.removeDatabase(d, false)
}

// removeDatabase deletes a database and its folder. The kernel is told to
// forget its names; the database's own name too when forgetName is set
// (the server deleted it, not an unlink through the mount).
func (s *Store) removeDatabase(d *database, forgetName bool) error {
	dbName := d.name
	s.mu.Lock()
	delete(s.dbs, dbName)
	s.dbsChangedLocked()
	s.mu.Unlock()
	d.mu.Lock()
	d.closeFiles()
	d.deleted = true
	ids := d.ids
	d.mu.Unlock()
	s.unregister(ids.db, ids.wal, ids.shm, ids.pos)
	// The kernel removed the name it unlinked; it must forget the others.
	changes := []FileChange{{Name: pagewire.FileName(dbName, pagewire.FilePos), ID: ids.pos, Entry: true}}
	if forgetName {
		changes = append(changes, FileChange{Name: dbName, ID: ids.db, Entry: true, Length: -1})
	}
	for kind, id := range map[pagewire.FileKind]uint64{pagewire.FileWAL: ids.wal, pagewire.FileSHM: ids.shm} {
		if id != 0 {
			changes = append(changes, FileChange{Name: pagewire.FileName(dbName, kind), ID: id, Entry: true})
		}
	}
	s.notify(changes...)
	if err := os.RemoveAll(d.dir); err != nil {
		return err
	}
	s.log.Info("deleted database", logkey.DB, dbName)
	return syncDir(filepath.Join(s.dir, "dbs"))
}

var primaryRef = &fileRef{kind: pagewire.FilePrimary}

// file finds a file by id. A deleted file's id is stale, but for a -shm
// still open: its orphaned content stays readable and writable.
func (s *Store) file(id uint64) (*fileRef, error) {
	if id == rootID+1 {
		return primaryRef, nil
	}
	s.mu.RLock()
	ref := s.files[id]
	s.mu.RUnlock()
	if ref == nil || (ref.gone && ref.kind != pagewire.FileSHM) {
		return nil, fmt.Errorf("%w: file %d", pagewire.ErrStale, id)
	}
	return ref, nil
}

// Open records an open file handle and returns the file. Opening a
// database for writing is refused on a replica, so that SQLite opens it
// read-only and apps get SQLITE_READONLY.
func (s *Store) Open(id uint64, write bool, by Writer) (FileInfo, error) {
	ref, err := s.file(id)
	if err != nil {
		return FileInfo{}, err
	}
	// Refusing the database file is enough for SQLite to treat the
	// connection as read-only (it never writes the -wal then). A reader
	// that must create the -wal, on a replica whose copy came from a
	// snapshot, opens it read-write: writes to it are still refused.
	if write && ref.kind == pagewire.FileDatabase {
		if err := s.checkWritableDB(ref.db, by); err != nil {
			return FileInfo{}, err
		}
	}
	if ref.kind == pagewire.FilePrimary {
		return s.primaryInfo()
	}
	ref.db.mu.Lock()
	fi, err := ref.db.info(ref.kind)
	if err == nil {
		ref.db.handles++
	}
	ref.db.mu.Unlock()
	if err != nil {
		return fi, err
	}
	s.mu.Lock()
	ref.open++
	s.mu.Unlock()
	return fi, nil
}

// Stat describes a file by id: the file as it is now, or a deleted -shm as
// the mount still holds it.
func (s *Store) Stat(id uint64) (FileInfo, error) {
	ref, err := s.file(id)
	if err != nil {
		return FileInfo{}, err
	}
	if ref.kind == pagewire.FilePrimary {
		return s.primaryInfo()
	}
	d := ref.db
	d.mu.RLock()
	defer d.mu.RUnlock()
	if ref.gone { // an orphaned -shm
		return FileInfo{Name: pagewire.FileName(d.name, ref.kind), ID: id, Kind: ref.kind, Size: int64(len(ref.shm.data)), ModTime: d.modTime[ref.kind]}, nil
	}
	fi, err := d.info(ref.kind)
	if err != nil {
		return fi, err
	}
	if fi.ID != id {
		return FileInfo{}, fmt.Errorf("%w: file %d", pagewire.ErrStale, id)
	}
	return fi, nil
}

// CloseHandle records that a file handle was released.
func (s *Store) CloseHandle(id uint64) {
	s.mu.Lock()
	ref := s.files[id]
	if ref == nil {
		s.mu.Unlock()
		return
	}
	if ref.open > 0 {
		ref.open--
	}
	if ref.gone && ref.open == 0 {
		delete(s.files, id)
	}
	s.mu.Unlock()
	ref.db.mu.Lock()
	if ref.db.handles > 0 {
		ref.db.handles--
	}
	ref.db.mu.Unlock()
}

// checkRange refuses an offset and length (a read, a write) that starts
// below 0 or ends past what an int64 holds.
func checkRange(op string, off int64, n int) error {
	if off < 0 || n < 0 || off > math.MaxInt64-int64(n) {
		return fmt.Errorf("%w: a %s of %d bytes at offset %d: a file's offsets run from 0 to 2^63-1", pagewire.ErrInvalidArgument, op, n, off)
	}
	return nil
}

// maxFileSize bounds the database file and the -wal, in bytes, for pages
// of pageSize: a write or truncate past it is refused before anything is
// written. They are the largest files SQLite makes (MaxPageCount pages; a
// WAL's frame numbers are 32-bit), far past any real write, but they keep
// a page or frame number computed from an offset within 32 bits. The -shm
// has its own bound (maxSHMSize).
func maxFileSize(kind pagewire.FileKind, pageSize uint32) int64 {
	if kind == pagewire.FileWAL {
		return walHeaderSize + math.MaxUint32*(walFrameHeaderSize+int64(pageSize))
	}
	return pagewire.MaxPageCount * int64(pageSize)
}

// checkFileEnd refuses a write or truncate of d's database file or -wal
// that would end past maxFileSize. d.mu must be held.
func (d *database) checkFileEnd(kind pagewire.FileKind, end int64) error {
	if limit := maxFileSize(kind, d.pageSize); end > limit {
		return fmt.Errorf("%w: refusing to make %s %d bytes long: with %d-byte pages it is at most %d", pagewire.ErrInvalidArgument, pagewire.FileName(d.name, kind), end, d.pageSize, limit)
	}
	return nil
}

// ReadAt reads from a file into p, like io.ReaderAt but returning a short
// count and nil at end of file. An offset below 0, or a read ending past
// what an int64 holds, is ErrInvalidArgument.
func (s *Store) ReadAt(id uint64, p []byte, off int64) (int, error) {
	if err := checkRange("read", off, len(p)); err != nil {
		return 0, err
	}
	ref, err := s.file(id)
	if err != nil {
		return 0, err
	}

	// The .primary file names the primary.
	if ref.kind == pagewire.FilePrimary {
		_, ro := s.Role()
		return copyAt(p, ro.Primary+"\n", off), nil
	}

	// Other files read under the database's lock.
	d := ref.db
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.deleted {
		return 0, fmt.Errorf("%w: file %d", pagewire.ErrStale, id)
	}
	var f *os.File
	switch ref.kind {
	case pagewire.FileDatabase:
		f = d.db
	case pagewire.FileWAL:
		f = d.wal
	case pagewire.FileSHM:
		return ref.shm.readAt(p, off), nil
	case pagewire.FilePos:
		return copyAt(p, posContent(d.visiblePos()), off), nil
	}

	// Read the database file or the -wal from disk.
	if f == nil {
		return 0, fmt.Errorf("%w: file %d", pagewire.ErrStale, id)
	}
	n, err := f.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return n, err
}

func copyAt(p []byte, s string, off int64) int {
	if off >= int64(len(s)) {
		return 0
	}
	return copy(p, s[off:])
}

// WriteAt writes p to a file at off and returns the file's new size and the
// database's TXID after the write. A write that starts below 0 or ends past
// the largest file of its kind (maxFileSize, maxSHMSize) is
// ErrInvalidArgument, and so is a commit it completes that claims pages its
// transaction does not hold; nothing changes then.
func (s *Store) WriteAt(id uint64, p []byte, off int64, by Writer) (size int64, txid pagewire.TXID, err error) {
	if err := checkRange("write", off, len(p)); err != nil {
		return 0, 0, err
	}
	ref, err := s.file(id)
	if err != nil {
		return 0, 0, err
	}

	// Who may write here: the role, the halt lock.
	switch ref.kind {
	case pagewire.FilePos, pagewire.FilePrimary:
		return 0, 0, fmt.Errorf("%w: this is a read-only pagewire file", pagewire.ErrInvalidArgument)
	case pagewire.FileDatabase, pagewire.FileWAL:
		if err := s.checkWritableDB(ref.db, by); err != nil {
			return 0, 0, err
		}
	}

	// Under the database's lock, exclusive, to the end of the write; a
	// commit that must wait for replicas waits after it.
	size, txid, wait, err := s.writeLocked(ref, id, p, off, by)
	if err != nil || wait == 0 {
		return size, txid, err
	}
	if err := s.awaitReplicas(ref.db, wait); err != nil {
		s.log.Warn("a transaction committed as this node stopped being the primary, while it waited for replicas; the app is told it failed",
			logkey.DB, ref.db.name, logkey.TXID, wait)
		return 0, 0, err
	}
	return size, txid, nil
}

// writeLocked is WriteAt under the database's lock. wait is the TXID of
// an app's commit the write must not return before replicas acknowledge
// (0: none).
func (s *Store) writeLocked(ref *fileRef, id uint64, p []byte, off int64, by Writer) (size int64, txid, wait pagewire.TXID, err error) {
	d := ref.db
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.deleted {
		return 0, 0, 0, fmt.Errorf("%w: file %d", pagewire.ErrStale, id)
	}

	// A database found damaged at startup takes no app writes: only the
	// node's own, which re-seed it from the primary.
	if d.startupErr != nil && ref.kind != pagewire.FileSHM && by != Applier {
		return 0, 0, 0, d.startupErr
	}
	if ref.kind != pagewire.FileSHM {
		if err := d.checkFileEnd(ref.kind, off+int64(len(p))); err != nil {
			return 0, 0, 0, err
		}
	}
	d.modTime[ref.kind] = time.Now()

	// The database file takes only committed pages (a checkpoint), the
	// -wal counts commits, the -shm is memory.
	switch ref.kind {
	case pagewire.FileDatabase:
		if err := d.markCheckpoint(); err != nil {
			return 0, 0, 0, err
		}
		if err := d.writeDB(off, p); err != nil {
			return 0, 0, 0, err
		}
		d.noteDBWrite()
		st, err := d.db.Stat()
		if err != nil {
			return 0, 0, 0, err
		}
		return st.Size(), d.pos.TXID, 0, nil
	case pagewire.FileWAL:
		if d.wal == nil {
			return 0, 0, 0, fmt.Errorf("%w: file %d", pagewire.ErrStale, id)
		}
		prev := d.pos
		appends := !d.w.ok || off < walHeaderSize || off >= wal.FrameOffset(d.w.commitFrame+1, d.pageSize)

		// What the commits this write completes stand for.
		// A replica's apply worker announces every commit (ExpectCommit);
		// the primary's commits a halt lock's holder forwarded are not.
		how := &commitRule{hidden: by == Applier, announced: d.expect,
			mustAnnounce: by == Applier && s.role.Load().role != pagewire.RolePrimary}
		if h := d.halt.Load(); by == App && h != nil && s.role.Load().role != pagewire.RolePrimary {
			// A halt lock's holder writes: each commit goes to the
			// primary first, with d.mu held.
			if !h.active() {
				return 0, 0, 0, fmt.Errorf("%w: the halt lock on %q expired; take it again", pagewire.ErrReadOnly, d.name)
			}
			how.forwardTo = h
		}
		if err := d.writeWAL(off, p, how); err != nil {
			return 0, 0, 0, err
		}
		switch {
		case d.pos.TXID == prev.TXID:
			// No commit: if it goes on past the last one, SQLite did not
			// fsync that one (durable.go).
			if by == App && appends {
				d.noteWALChange()
			}
		case by == App && how.forwardTo == nil:
			// The write committed. If the node stopped being the primary
			// meanwhile (it stepped down, or it was frozen past its lease),
			// the app must not be told it succeeded: another node may have
			// taken writes already. The transaction stays in this node's
			// files, is never sent to replicas, and is kept aside when it
			// rejoins the new primary.
			if err := s.checkWritable(App); err != nil {
				d.capStream(prev, s.role.Load().epoch)
				s.log.Warn("a transaction committed as this node stopped being the primary; the app is told it failed",
					logkey.DB, d.name, logkey.TXID, d.pos.TXID)
				return 0, 0, 0, err
			}
			wait = d.noteAppCommit(prev, s.syncReplicas > 0 && !d.acks.isDegraded())
		}
		st, err := d.wal.Stat()
		if err != nil {
			return 0, 0, 0, err
		}
		return st.Size(), d.pos.TXID, wait, nil
	default: // FileSHM
		size, err := ref.shm.writeAt(p, off)
		return size, d.pos.TXID, 0, err
	}
}

// Truncate sets a file's size. A negative size, one past the largest file
// of its kind, or one that grows the database file past its committed
// pages is ErrInvalidArgument.
func (s *Store) Truncate(id uint64, size int64, by Writer) (FileInfo, error) {
	if size < 0 {
		return FileInfo{}, fmt.Errorf("%w: negative size", pagewire.ErrInvalidArgument)
	}
	ref, err := s.file(id)
	if err != nil {
		return FileInfo{}, err
	}

	// Who may truncate: the role, the halt lock.
	switch ref.kind {
	case pagewire.FilePos, pagewire.FilePrimary:
		return FileInfo{}, fmt.Errorf("%w: this is a read-only pagewire file", pagewire.ErrInvalidArgument)
	case pagewire.FileDatabase, pagewire.FileWAL:
		if err := s.checkWritableDB(ref.db, by); err != nil {
			return FileInfo{}, err
		}
	}

	// Under the database's lock, exclusive.
	d := ref.db
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.deleted {
		return FileInfo{}, fmt.Errorf("%w: file %d", pagewire.ErrStale, id)
	}
	d.modTime[ref.kind] = time.Now()

	// Truncate the file; a -wal cut below its last counted commit is reset.
	switch ref.kind {
	case pagewire.FileDatabase:
		if size < int64(d.pageSize) {
			return FileInfo{}, fmt.Errorf("%w: refusing to truncate %q below one page: delete the database instead", pagewire.ErrInvalidArgument, d.name)
		}
		if err := d.checkDBTruncate(size); err != nil {
			return FileInfo{}, err
		}
		d.keepForViews(d.db, size, -1)
		if err := d.db.Truncate(size); err != nil {
			return FileInfo{}, err
		}
	case pagewire.FileWAL:
		if err := d.checkFileEnd(ref.kind, size); err != nil {
			return FileInfo{}, err
		}
		// A cut below the counted commit (wal_checkpoint(TRUNCATE))
		// takes the generation off the disk: the meta records its end
		// durably first.
		frameSize := int64(walFrameHeaderSize) + int64(d.pageSize)
		reset := size < walHeaderSize+int64(d.w.commitFrame)*frameSize
		if reset {
			if err := d.syncMetaEnd(); err != nil {
				return FileInfo{}, err
			}
		}
		d.keepForViews(d.wal, size, -1)
		if err := d.wal.Truncate(size); err != nil {
			return FileInfo{}, err
		}
		if by == App {
			d.noteWALChange() // SQLite went on after the last commit without an fsync
		}
		if reset {
			d.resetWAL()
		}
	case pagewire.FileSHM:
		if err := ref.shm.truncate(size); err != nil {
			return FileInfo{}, err
		}
		if ref.gone {
			return FileInfo{Name: pagewire.FileName(d.name, ref.kind), ID: id, Kind: ref.kind, Size: size, ModTime: d.modTime[ref.kind]}, nil
		}
	}
	return d.info(ref.kind)
}

// Sync makes a file's data durable. A WAL fsync also makes a new WAL
// generation's meta record durable. An app's fsync that follows a commit
// waiting for replicas waits for them (syncrep.go); the apply worker's
// never does: the app's commit is not the worker's to acknowledge, and on
// a node that stopped being the primary the wait fails.
func (s *Store) Sync(id uint64, by Writer) error {
	ref, err := s.file(id)
	if err != nil {
		return err
	}
	if ref.db == nil {
		return nil
	}

	// The fsyncs run without the database's lock, so that reads, commits
	// and replication streams go on meanwhile; the files stay open until
	// the database is deleted or replaced, which makes the sync fail as
	// stale.
	d := ref.db
	d.mu.Lock()
	if d.deleted {
		d.mu.Unlock()
		return fmt.Errorf("%w: file %d", pagewire.ErrStale, id)
	}

	// Pick the file to sync; a -wal created since its folder was last
	// synced takes the folder along, as SQLite syncs the directory of a
	// -wal it created. A WAL fsync makes the commits before it
	// streamable (durable.go).
	var f *os.File
	syncFolder := false
	var covers pagewire.Pos // the position a WAL fsync makes durable
	walSync := false
	switch ref.kind {
	case pagewire.FileDatabase:
		f = d.db
		d.ckptMarked = false // the checkpoint ends with this fsync
	case pagewire.FileWAL:
		if d.wal != nil {
			f, syncFolder = d.wal, d.walDirUnsynced
			covers, walSync = d.beginWALSync(), true
		}
	}
	d.mu.Unlock()
	if f == nil {
		return nil
	}

	// A WAL fsync syncs the transaction log alongside, so that ext4 can
	// make both durable in one journal commit: the records of the commits
	// it makes durable are durable too when it returns (txlog.go). A
	// closed file means the database was deleted or replaced.
	var logErr chan error
	if walSync {
		logErr = make(chan error, 1)
		go func() { logErr <- d.txlog.sync() }()
	}
	err = f.Sync()
	if errors.Is(err, os.ErrClosed) {
		err = fmt.Errorf("%w: file %d", pagewire.ErrStale, id)
	}
	if err == nil && syncFolder {
		err = syncDir(d.dir)
	}
	if logErr != nil {
		if lerr := <-logErr; err == nil && lerr != nil {
			err = lerr
		}
	}
	d.mu.Lock()
	if err == nil && syncFolder && d.wal == f {
		d.walDirUnsynced = false
	}
	var wait pagewire.TXID // an app's commit that waits here for replicas
	if walSync {
		wait = d.endWALSync(covers, err == nil)
	}
	if by == Applier {
		wait = 0
	}
	d.mu.Unlock()
	if err != nil || wait == 0 {
		return err
	}
	if err := s.awaitReplicas(d, wait); err != nil {
		s.log.Warn("a transaction committed as this node stopped being the primary, while its fsync waited for replicas; the app is told it failed",
			logkey.DB, d.name, logkey.TXID, wait)
		return err
	}
	return nil
}

// SyncDir makes created and deleted names durable.
func (s *Store) SyncDir() error { return syncDir(filepath.Join(s.dir, "dbs")) }

// List returns every file on the mount, sorted by name.
func (s *Store) List() []FileInfo {
	var out []FileInfo
	if fi, err := s.primaryInfo(); err == nil {
		out = append(out, fi)
	}
	dbs := s.databases()
	for _, d := range dbs {
		d.mu.RLock()
		for _, k := range []pagewire.FileKind{pagewire.FileDatabase, pagewire.FileWAL, pagewire.FileSHM, pagewire.FilePos} {
			if fi, err := d.info(k); err == nil {
				out = append(out, fi)
			}
		}
		d.mu.RUnlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Databases describes every database, sorted by name.
func (s *Store) Databases() []DatabaseInfo {
	s.mu.RLock()
	names := make([]string, 0, len(s.dbs))
	for name := range s.dbs {
		names = append(names, name)
	}
	s.mu.RUnlock()
	sort.Strings(names)
	out := make([]DatabaseInfo, 0, len(names))
	for _, name := range names {
		if di, err := s.Database(name); err == nil {
			out = append(out, di)
		}
	}
	return out
}

// Database describes one database.
func (s *Store) Database(name string) (DatabaseInfo, error) {
	if err := pagewire.ValidateDBName(name); err != nil {
		return DatabaseInfo{}, err
	}
	s.mu.RLock()
	d := s.dbs[name]
	s.mu.RUnlock()
	if d == nil {
		return DatabaseInfo{}, fmt.Errorf("%w: database %q", pagewire.ErrNotFound, name)
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	return DatabaseInfo{Name: d.name, Pos: d.pos, PageSize: d.pageSize, PageCount: uint32(len(d.pages)), OpenHandles: d.handles, Commits: d.commits, Err: d.startupErr}, nil
}

// Import replaces (or creates) a database with the SQLite file read from r.
// It is refused while the mount has any of the database's files open.
func (s *Store) Import(name string, r io.Reader) (DatabaseInfo, error) {
	if err := pagewire.ValidateDBName(name); err != nil {
		return DatabaseInfo{}, err
	}
	if err := s.checkWritable(App); err != nil {
		return DatabaseInfo{}, err
	}

	// Receive the file into data.dir first, up to data.max-import-size:
	// one byte more says it is too big, and receiving stops there.
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "dbs"), ".import-*")
	if err != nil {
		return DatabaseInfo{}, err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, io.LimitReader(r, s.maxImport+1))
	if err == nil && n > s.maxImport {
		err = fmt.Errorf("%w: the file is over data.max-import-size (%d bytes): raise data.max-import-size in the node's config (e.g. \"64GiB\") to import a larger database",
			pagewire.ErrInvalidArgument, s.maxImport)
	}
	if err == nil {
		err = checkImportFile(tmp) // nothing changes for a file that is no database
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, pagewire.ErrInvalidArgument) {
		return DatabaseInfo{}, fmt.Errorf("import %q: %w", name, err)
	} else if err != nil {
		return DatabaseInfo{}, fmt.Errorf("receive import: %w", err)
	}

	// The database is created if it does not exist yet.
	if _, err := s.Create(name, App); err != nil {
		return DatabaseInfo{}, err
	}
	s.mu.RLock()
	d := s.dbs[name]
	s.mu.RUnlock()
	if d == nil {
		return DatabaseInfo{}, fmt.Errorf("%w: database %q was deleted during the import", pagewire.ErrNotFound, name)
	}

	// Replace the database's files with the imported one, under new IDs.
	before, err := d.replace(tmp.Name(), s.newID)
	if err != nil {
		return DatabaseInfo{}, fmt.Errorf("import %q: %w", name, err)
	}
	s.unregister(before.db, before.wal, before.shm)
	s.register(d)

	// The kernel must forget the old files: the database is a new file now,
	// and its -wal and -shm are gone.
	changes := []FileChange{{Name: name, ID: before.db, Entry: true, Length: -1}}
	if before.wal != 0 {
		changes = append(changes, FileChange{Name: pagewire.FileName(name, pagewire.FileWAL), ID: before.wal, Entry: true, Length: -1})
	}
	if before.shm != 0 {
		changes = append(changes, FileChange{Name: pagewire.FileName(name, pagewire.FileSHM), ID: before.shm, Entry: true, Length: -1})
	}
	s.notify(changes...)
	s.log.Info("imported database", logkey.DB, name)
	return s.Database(name)
}
