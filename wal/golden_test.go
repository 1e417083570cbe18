package wal

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from what the tests decode")

// summarize walks a WAL as recovery does and describes what it finds: the
// valid frames, each commit (frame and database size), where the walk
// stopped and why, and the last commit (SQLite's mxFrame).
func summarize(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := NewReader(f)
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	h := r.Header()
	var sb strings.Builder
	fmt.Fprintf(&sb, "page size %d, big-endian checksum %v\n", h.PageSize, h.BigEndianChecksum)
	var mxFrame uint32
	for {
		fh, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if fh.Commit != 0 {
			fmt.Fprintf(&sb, "commit at frame %d: %d pages\n", r.Frame(), fh.Commit)
			mxFrame = r.Frame()
		}
	}
	fmt.Fprintf(&sb, "valid frames %d, stopped at frame %d: %s\n", r.Frame(), r.Frame()+1, r.Fault())
	fmt.Fprintf(&sb, "mxFrame %d\n", mxFrame)
	return sb.String()
}

// TestReader_golden decodes WALs written by SQLite (testdata/gen.py) and
// compares what it finds with testdata/*.golden.
func TestReader_golden(t *testing.T) {
	for _, name := range []string{"valid", "torn", "salt-mismatch", "checksum-mismatch"} {
		t.Run(name, func(t *testing.T) {
			got := summarize(t, filepath.Join("testdata", name+".wal"))
			golden := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Fatalf("got\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// TestReader_reencode: every valid frame of a WAL SQLite wrote encodes back
// to its bytes, chaining the checksum from the header's.
func TestReader_reencode(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "valid.wal"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := DecodeHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if e := h.Encode(); string(e[:]) != string(b[:HeaderSize]) {
		t.Fatalf("header re-encodes to %x, want %x", e, b[:HeaderSize])
	}
	r, err := NewReader(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	enc := h.Encoder()
	out := h.AppendTo(nil)
	for {
		fh, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = enc.AppendFrame(out, fh.Pgno, fh.Commit, r.Page())
		if enc.Checksum != r.Checksum() {
			t.Fatalf("frame %d: checksum %v, reader's %v", r.Frame(), enc.Checksum, r.Checksum())
		}
	}
	if string(out) != string(b) {
		t.Fatal("re-encoded WAL differs from SQLite's")
	}
}
