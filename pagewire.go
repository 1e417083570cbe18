package pagewire

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// TXID is a database's transaction ID: 1 for a new database, then one more
// for every committed write transaction.
type TXID uint64

// String formats the TXID as 16 hex digits, as LiteFS does.
func (t TXID) String() string { return fmt.Sprintf("%016x", uint64(t)) }

// Pos is a database's position: its TXID and the rolling checksum of its
// pages at that TXID.
type Pos struct {
	TXID     TXID
	Checksum uint64 // XOR of per-page CRC64s, top bit set (DESIGN §7)
}

// String formats the position as the -pos file does: "%016x/%016x".
func (p Pos) String() string { return fmt.Sprintf("%016x/%016x", uint64(p.TXID), p.Checksum) }

// Role is a node's role in its cluster.
type Role int

// The roles a node can have.
const (
	RoleUnknown Role = iota // no role yet
	RolePrimary             // holds the write lease
	RoleReplica             // read-only
)

// String names the role.
func (r Role) String() string {
	switch r {
	case RolePrimary:
		return "primary"
	case RoleReplica:
		return "replica"
	default:
		return "unknown"
	}
}

// ReasonReadOnly is the google.rpc.ErrorInfo reason of a write refused
// because this node is not the primary.
const ReasonReadOnly = "READONLY_DBMOVED"

// Errors that cross component boundaries. Compare with errors.Is.
var (
	// ErrNotFound: the database or file does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalidName: the name is not a plain file name.
	ErrInvalidName = errors.New("invalid name")
	// ErrNotWAL: the operation would take a database out of WAL mode.
	ErrNotWAL = errors.New("databases on pagewire stay in WAL mode")
	// ErrReadOnly: writes are refused on this node (see ReadOnlyError).
	ErrReadOnly = errors.New("database is read-only on this node")
	// ErrStale: the file was deleted and created again since it was opened.
	ErrStale = errors.New("stale file handle")
	// ErrBusy: the database is in use and the operation needs it idle.
	ErrBusy = errors.New("database is in use")
	// ErrCorrupt: stored data does not match its checksum or format.
	ErrCorrupt = errors.New("data is corrupt")
	// ErrInvalidArgument: a request carries a bad value.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotHolder is a halt lock released or used by a client that does
	// not hold it.
	ErrNotHolder = errors.New("the halt lock is held by another client")
	// ErrTooMany: the node already runs as many operations of the kind
	// as it allows at once (exports, say); try again when one has ended.
	ErrTooMany = errors.New("too many at once")
	// ErrMounted: the storage server already serves a mount; it serves
	// one at a time (see MountedError).
	ErrMounted = errors.New("the storage server already serves a mount")
)

// MountedError is a mount refused because another mount holds the
// storage server's mount session. It names that mount as it registered.
type MountedError struct {
	Hostname string // the first mount's host
	PID      int    // its process id on that host
	Dir      string // its mount point there
}

// Error names the first mount and says what to do.
func (e *MountedError) Error() string {
	return fmt.Sprintf("the storage server is already mounted by %s (pid %d) at %s: a storage server serves one mount at a time; stop that mount first", e.Hostname, e.PID, e.Dir)
}

// Is makes errors.Is(err, ErrMounted) true.
func (e *MountedError) Is(target error) bool { return target == ErrMounted }

// ReadOnlyError is a write refused because another node is the primary.
type ReadOnlyError struct {
	Primary      string // the primary's hostname, "" when unknown
	AdvertiseURL string // the primary's advertise URL, "" when unknown
}

// Error says where writes must go.
func (e *ReadOnlyError) Error() string {
	if e.Primary == "" {
		return "database is read-only on this node: no primary is known; wait for one to be elected"
	}
	return fmt.Sprintf("database is read-only on this node: send writes to the primary %s (%s)", e.Primary, e.AdvertiseURL)
}

// Is makes errors.Is(err, ErrReadOnly) true.
func (e *ReadOnlyError) Is(target error) bool { return target == ErrReadOnly }

// FileKind is what a file on the mount is.
type FileKind int

// The kinds of files on the mount.
const (
	FileDatabase FileKind = iota + 1 // the main database file
	FileWAL                          // <db>-wal
	FileSHM                          // <db>-shm
	FilePos                          // <db>-pos, read-only position
	FileJournal                      // <db>-journal: always refused
	FilePrimary                      // .primary, on replicas
)

// PrimaryFileName is the mount file that names the primary on replicas.
const PrimaryFileName = ".primary"

var suffixes = []struct {
	suffix string
	kind   FileKind
}{
	{"-wal", FileWAL},
	{"-shm", FileSHM},
	{"-pos", FilePos},
	{"-journal", FileJournal},
}

// ParseFileName splits a mount file name into its database name and kind.
// It returns ErrInvalidName for names that are not plain file names.
func ParseFileName(name string) (db string, kind FileKind, err error) {
	if name == PrimaryFileName {
		return "", FilePrimary, nil
	}
	for _, s := range suffixes {
		if base, ok := strings.CutSuffix(name, s.suffix); ok {
			if err := ValidateDBName(base); err != nil {
				return "", 0, err
			}
			return base, s.kind, nil
		}
	}
	if err := ValidateDBName(name); err != nil {
		return "", 0, err
	}
	return name, FileDatabase, nil
}

// FileName is the mount name of a database's file of the given kind.
func FileName(db string, kind FileKind) string {
	switch kind {
	case FilePrimary:
		return PrimaryFileName
	case FileDatabase:
		return db
	}
	for _, s := range suffixes {
		if s.kind == kind {
			return db + s.suffix
		}
	}
	return db
}

// MaxNameLen is the longest database name, leaving room for "-journal" within
// the 255 bytes a file name may have.
const MaxNameLen = 255 - len("-journal")

// ValidateDBName checks that name can be a database: a plain file name with no
// "/", no NUL, not "." or "..", not starting with ".", not ending in a
// reserved suffix, at most MaxNameLen bytes.
func ValidateDBName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: database name is empty", ErrInvalidName)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: database name is %d bytes; the limit is %d", ErrInvalidName, len(name), MaxNameLen)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("%w: database name %q has a '/' or NUL byte: use a plain file name", ErrInvalidName, name)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("%w: database name %q starts with '.', which pagewire reserves", ErrInvalidName, name)
	}
	for _, s := range suffixes {
		if strings.HasSuffix(name, s.suffix) {
			return fmt.Errorf("%w: database name %q ends in %q, which SQLite uses for its own files", ErrInvalidName, name, s.suffix)
		}
	}
	return nil
}

// Reasons carried in google.rpc.ErrorInfo so that errors.Is works across
// the wire. Each names one sentinel above.
const (
	ReasonNotFound        = "NOT_FOUND"
	ReasonInvalidName     = "INVALID_NAME"
	ReasonNotWAL          = "NOT_WAL"
	ReasonStale           = "STALE_FILE"
	ReasonBusy            = "BUSY"
	ReasonCorrupt         = "CORRUPT"
	ReasonInvalidArgument = "INVALID_ARGUMENT"
	ReasonNotHolder       = "NOT_HOLDER"
	ReasonTooMany         = "TOO_MANY"
	ReasonMounted         = "MOUNTED"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of pagewire's errors.
const ErrorDomain = "pagewire.dev"

var reasons = []struct {
	reason string
	err    error
}{
	{ReasonReadOnly, ErrReadOnly},
	{ReasonNotFound, ErrNotFound},
	{ReasonInvalidName, ErrInvalidName},
	{ReasonNotWAL, ErrNotWAL},
	{ReasonStale, ErrStale},
	{ReasonBusy, ErrBusy},
	{ReasonCorrupt, ErrCorrupt},
	{ReasonInvalidArgument, ErrInvalidArgument},
	{ReasonNotHolder, ErrNotHolder},
	{ReasonTooMany, ErrTooMany},
	{ReasonMounted, ErrMounted},
}

// ReasonOf is the wire reason of err, or "" if err is none of the sentinels.
func ReasonOf(err error) string {
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return ""
}

// ErrorOf is the sentinel for a wire reason, or nil if the reason is unknown.
func ErrorOf(reason string) error {
	for _, r := range reasons {
		if r.reason == reason {
			return r.err
		}
	}
	return nil
}

// ValidPageSize reports whether n is a page size SQLite accepts: a power of
// two from 512 to 65536.
func ValidPageSize(n uint32) bool { return n >= 512 && n <= 65536 && n&(n-1) == 0 }

// MaxPageCount is the most pages a SQLite database can have
// (SQLITE_MAX_PAGE_COUNT): a larger count from the wire or a file is
// never real.
const MaxPageCount = 0xFFFFFFFE

// LockPage is the page that holds SQLite's lock bytes (at offset 2^30) in a
// database of pageSize-byte pages. It never holds data: SQLite skips it, and
// it exists only in databases over 1 GiB.
func LockPage(pageSize uint32) uint32 { return 1<<30/pageSize + 1 }

// MaxPagesAfter is the largest size, in pages, that a transaction writing
// `written` distinct pages can leave a database of cur pages at. A
// transaction that grows a database writes the pages it adds, but for the
// lock page; MaxPagesAfter does not require each added page to be among
// those written, only bounds the growth by their number. A larger size
// claims pages the transaction does not hold: taking it would let a
// message of a few bytes cost an allocation per claimed page.
func MaxPagesAfter(cur uint32, written int, pageSize uint32) uint32 {
	limit := uint64(cur) + uint64(max(written, 0))
	if lock := uint64(LockPage(pageSize)); uint64(cur) < lock && lock <= limit {
		limit++ // the lock page is counted in the size, never written
	}
	return uint32(min(limit, MaxPageCount))
}

// CheckGrowth refuses a database size of pageCount pages after a
// transaction that writes `written` distinct pages to a database of cur
// pages, if MaxPagesAfter does not allow it. Its error wraps
// ErrInvalidArgument.
func CheckGrowth(cur, pageCount uint32, written int, pageSize uint32) error {
	if limit := MaxPagesAfter(cur, written, pageSize); pageCount > limit {
		return fmt.Errorf("%w: the transaction sets the database to %d pages, but from %d pages, writing %d, it can reach %d at most: a transaction adds only pages it writes",
			ErrInvalidArgument, pageCount, cur, written, limit)
	}
	return nil
}

// Page is one database page.
type Page struct {
	Pgno uint32 // from 1
	Data []byte // PageSize bytes
}

// Txn is one committed write transaction as it replicates: the pages it
// changed and the database's size after it.
type Txn struct {
	TXID         TXID
	PreChecksum  uint64 // the database's checksum before the transaction
	PostChecksum uint64 // and after
	PageSize     uint32
	PageCount    uint32    // database size in pages after the transaction
	CommitTime   time.Time // when the primary committed it
	Pages        []Page    // ascending by Pgno, each page once
}

// Check reports the first thing that makes t unfit to apply to a database
// of cur pages of pageSize bytes, before anything is allocated or applied
// for it: no pages; a page number 0, repeated, out of order, beyond
// PageCount or SQLite's lock page; a page of another size than pageSize; a
// PageSize other than pageSize; a PageCount of 0, or more than CheckGrowth
// allows. Its errors wrap ErrInvalidArgument.
func (t Txn) Check(pageSize, cur uint32) error {
	switch {
	case t.PageSize != pageSize:
		return fmt.Errorf("%w: transaction %d has page size %d, the database's is %d", ErrInvalidArgument, t.TXID, t.PageSize, pageSize)
	case len(t.Pages) == 0:
		return fmt.Errorf("%w: transaction %d has no pages: a transaction changes at least one page", ErrInvalidArgument, t.TXID)
	case t.PageCount == 0:
		return fmt.Errorf("%w: transaction %d sets the database to 0 pages: a database has at least one page", ErrInvalidArgument, t.TXID)
	}
	lock := LockPage(pageSize)
	var prev uint32
	for _, p := range t.Pages {
		switch {
		case p.Pgno == 0 || p.Pgno <= prev:
			return fmt.Errorf("%w: transaction %d has page %d after page %d: pages count from 1, ascending, each once", ErrInvalidArgument, t.TXID, p.Pgno, prev)
		case p.Pgno > t.PageCount:
			return fmt.Errorf("%w: transaction %d has page %d beyond the database size of %d pages", ErrInvalidArgument, t.TXID, p.Pgno, t.PageCount)
		case p.Pgno == lock:
			return fmt.Errorf("%w: transaction %d has page %d, SQLite's lock page, which holds no data", ErrInvalidArgument, t.TXID, p.Pgno)
		case len(p.Data) != int(pageSize):
			return fmt.Errorf("%w: transaction %d has page %d of %d bytes; the page size is %d", ErrInvalidArgument, t.TXID, p.Pgno, len(p.Data), pageSize)
		}
		prev = p.Pgno
	}
	if err := CheckGrowth(cur, t.PageCount, len(t.Pages), pageSize); err != nil {
		return fmt.Errorf("transaction %d: %w", t.TXID, err)
	}
	return nil
}

// Epoch is a lease epoch: every lease acquisition gets a larger one.
type Epoch uint64

// HaltLock is a held halt lock on a database: while a client holds it
// through a replica, its writes there are committed on the primary first.
type HaltLock struct {
	ID      string    // names the lock: releasing it needs it
	TXID    TXID      // the database's TXID on the primary when taken
	Expires time.Time // when the lock is released by itself
	Holder  string    // hostname of the node it was taken through
}
