package wal

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/pagewire/pagewire"
)

// FuzzDecodeHeader: decoding never panics, only valid page sizes and
// checksums are accepted, and a valid header encodes back to its bytes.
func FuzzDecodeHeader(f *testing.F) {
	for _, bigEnd := range []bool{false, true} {
		h := Header{BigEndianChecksum: bigEnd, PageSize: 4096, Salt: Salt{1, 2}}
		b := h.Encode()
		f.Add(b[:])
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeHeader(b)
		if err != nil {
			return
		}
		if !pagewire.ValidPageSize(h.PageSize) {
			t.Fatalf("page size %d accepted", h.PageSize)
		}
		if (Checksum{}).Update(h.BigEndianChecksum, b[:24]) != h.Checksum {
			t.Fatal("accepted a header whose checksum does not hold")
		}
		if e := h.Encode(); !bytes.Equal(e[:], b[:HeaderSize]) {
			t.Fatalf("re-encoded %x, want %x", e, b[:HeaderSize])
		}
	})
}

// FuzzReader: reading any bytes as a WAL never panics, and the frames it
// accepts re-encode to the bytes read.
func FuzzReader(f *testing.F) {
	for _, name := range []string{"valid", "torn", "salt-mismatch", "checksum-mismatch"} {
		b, err := os.ReadFile(filepath.Join("testdata", name+".wal"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		h := r.Header()
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
			if fh.Pgno == 0 || fh.Salt != h.Salt {
				t.Fatalf("frame %d accepted: %+v", r.Frame(), fh)
			}
			out = enc.AppendFrame(out, fh.Pgno, fh.Commit, r.Page())
		}
		if r.Fault() == FaultNone {
			t.Fatal("stopped without a fault")
		}
		if !bytes.Equal(out, b[:len(out)]) {
			t.Fatal("accepted frames re-encode to other bytes")
		}
	})
}

// FuzzDecodeIndexHeader: decoding never panics, and a valid header is a
// fixed point of encode and decode.
func FuzzDecodeIndexHeader(f *testing.F) {
	h := IndexHeader{Change: 3, PageSize: 4096, MxFrame: 10, NPage: 4, Salt: Salt{1, 2}}
	c := h.Encode()
	f.Add(append(c[:], c[:]...))
	f.Add(make([]byte, IndexHeaderRegionSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := DecodeIndexHeader(b)
		if !ok {
			return
		}
		h.Version, h.IsInit = IndexVersion, 1
		c := h.Encode()
		h2, ok := DecodeIndexHeader(append(c[:], c[:]...))
		if !ok || h2 != h {
			t.Fatalf("re-decoded %+v, %v; want %+v", h2, ok, h)
		}
	})
}

// FuzzDecodeCkptInfo: decoding never panics and reads the fields where
// SQLite keeps them.
func FuzzDecodeCkptInfo(f *testing.F) {
	f.Add(make([]byte, IndexHeaderRegionSize))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		c := DecodeCkptInfo(b)
		if len(b) < IndexHeaderRegionSize {
			if c != (CkptInfo{}) {
				t.Fatalf("%d bytes decode to %+v", len(b), c)
			}
			return
		}
		if c.NBackfill != IndexOrder.Uint32(b[NBackfillOffset:]) || c.ReadMark[4] != IndexOrder.Uint32(b[ReadMarkOffset+16:]) || c.NBackfillAttempted != IndexOrder.Uint32(b[NBackfillTriedOffset:]) {
			t.Fatalf("decoded %+v", c)
		}
	})
}
