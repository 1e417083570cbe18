package engine

import (
	"errors"
	"fmt"
	"io"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/wal"
)

// maxReportedPages bounds the page numbers a verification lists; the count
// of bad pages is always whole.
const maxReportedPages = 100

// VerifyReport is what a verification of a database found.
type VerifyReport struct {
	Name string
	// Pos is the database's position once verified (after a repair, the
	// position that includes the transactions it counted).
	Pos       pagewire.Pos
	PageCount uint32
	// Checksum is the checksum of the content as SQLite reads it: the
	// database file, with each page's newest committed WAL frame over it.
	Checksum uint64
	// BadPages lists (up to 100) pages whose content does not match the
	// checksum recorded for them; BadPageCount counts them all.
	BadPages     []uint32
	BadPageCount int
	// WAL is a problem found in the WAL's committed frames, "" if none.
	WAL string
	// Uncounted is how many transactions the WAL holds, valid and
	// committed as SQLite's recovery would read them, past the last one
	// counted; Repaired says they were counted by this verification.
	Uncounted int
	Repaired  bool
}

// OK reports whether the recorded position matches the content.
func (r VerifyReport) OK() bool {
	return r.BadPageCount == 0 && r.WAL == "" && r.Checksum == r.Pos.Checksum && (r.Uncounted == 0 || r.Repaired)
}

// String says what the verification found, in a line.
func (r VerifyReport) String() string {
	if r.OK() {
		s := fmt.Sprintf("%s: ok at %s (%d pages)", r.Name, r.Pos, r.PageCount)
		if r.Repaired {
			s += fmt.Sprintf("; counted %d committed transactions the position had missed", r.Uncounted)
		}
		return s
	}
	s := fmt.Sprintf("%s: MISMATCH at %s: content checksum %016x", r.Name, r.Pos, r.Checksum)
	if r.BadPageCount > 0 {
		s += fmt.Sprintf("; %d pages differ from their recorded checksums: %v", r.BadPageCount, r.BadPages)
		if r.BadPageCount > len(r.BadPages) {
			s += " ..."
		}
	}
	if r.WAL != "" {
		s += "; WAL: " + r.WAL
	}
	if r.Uncounted > 0 && !r.Repaired {
		s += fmt.Sprintf("; the WAL holds %d committed transactions that were not counted", r.Uncounted)
	}
	return s
}

// Verify checks that a database's recorded position matches its content as
// SQLite reads it: every committed WAL frame validates, no valid commit
// lies past the last counted one, and every page's content matches the
// checksum recorded for it. With repair, committed transactions found in
// the WAL past the last counted one are counted (and logged for replicas),
// as recovery at startup would. Writes wait while it reads.
func (s *Store) Verify(name string, repair bool) (VerifyReport, error) {
	d, err := s.db(name)
	if err != nil {
		return VerifyReport{}, err
	}

	// The database must be there, and not found damaged at startup.
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.deleted {
		return VerifyReport{}, pagewire.ErrNotFound
	}
	if d.startupErr != nil {
		// The recorded position is the one that was wrong at startup.
		return VerifyReport{}, d.startupErr
	}

	// Check the WAL; with repair, count the commits the position missed.
	r := VerifyReport{Name: d.name}
	r.WAL, r.Uncounted, err = d.verifyWAL()
	if err != nil {
		return r, err
	}
	if r.Uncounted > 0 && repair && r.WAL == "" {
		before := d.pos.TXID
		if _, _, err := d.scanFrames(0, &commitRule{announced: d.expect}, nil); err != nil {
			return r, fmt.Errorf("count the WAL's uncounted transactions: %w", err)
		}
		d.w.pending = d.w.pending[:0]
		d.commits += uint64(d.pos.TXID - before)
		if err := d.saveMeta(true); err != nil {
			return r, err
		}
		r.Repaired = true
		d.log.Warn("verify counted committed transactions the position had missed", "transactions", r.Uncounted, logkey.TXID, d.pos.TXID)
	}

	// Then check the pages against the position.
	r.Pos, r.PageCount = d.pos, uint32(len(d.pages))
	if err := d.verifyPages(&r); err != nil {
		return r, err
	}
	if !r.OK() {
		d.log.Error("database does not match its recorded position", "report", r.String())
	}
	return r, nil
}

// verifyWAL re-reads the current WAL generation from its first frame as
// SQLite's recovery would. It reports a problem with the frames already
// counted, and how many valid commits follow the last counted one.
// mu must be held.
func (d *database) verifyWAL() (problem string, uncounted int, err error) {
	if d.wal == nil || !d.w.ok {
		return "", 0, nil
	}

	// The header must be the one the counted frames were checked under.
	hdr := make([]byte, walHeaderSize)
	if _, err := d.wal.ReadAt(hdr, 0); err != nil {
		return fmt.Sprintf("cannot read its header: %v", err), 0, nil
	}
	h, herr := wal.DecodeHeader(hdr)
	if herr != nil || h != d.w.hdr {
		return fmt.Sprintf("its header is not the one its frames were counted under (%v)", herr), 0, nil
	}

	// Follow the checksum chain frame by frame, as SQLite's recovery does.
	ck := h.Checksum
	buf := make([]byte, walFrameHeaderSize+int(d.pageSize))
	for f := uint32(1); ; f++ {
		n, rerr := d.wal.ReadAt(buf, wal.FrameOffset(f, d.pageSize))
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return "", 0, fmt.Errorf("read wal frame %d: %w", f, rerr)
		}
		valid := n == len(buf)
		var fh wal.FrameHeader
		if valid {
			var fault wal.Fault
			fh, ck, fault = h.CheckFrame(ck, buf)
			valid = fault == wal.FaultNone
		}
		switch {
		case !valid && f <= d.w.commitFrame:
			return fmt.Sprintf("frame %d of the counted transactions does not validate", f), 0, nil
		case !valid:
			return "", uncounted, nil
		case f == d.w.commitFrame && ck != wal.Checksum{d.w.ck1, d.w.ck2}:
			return fmt.Sprintf("the checksum chain at frame %d differs from the one counted", f), 0, nil
		case f > d.w.commitFrame && fh.Commit != 0:
			uncounted++
		}
	}
}

// verifyPages reads every page as SQLite would and compares its checksum
// with the recorded one. mu must be held.
func (d *database) verifyPages(r *VerifyReport) error {
	buf := make([]byte, d.pageSize)
	var sum uint64
	for i, want := range d.pages {
		pgno := uint32(i + 1)
		if err := d.readPage(pgno, buf); err != nil {
			return fmt.Errorf("read page %d: %w", pgno, err)
		}
		got := pageChecksum(pgno, buf)
		sum ^= got
		if got != want {
			r.BadPageCount++
			if len(r.BadPages) < maxReportedPages {
				r.BadPages = append(r.BadPages, pgno)
			}
		}
	}
	r.Checksum = sum | checksumFlag
	return nil
}
