package pagewire_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/pagewire/pagewire"
)

func TestParseFileName(t *testing.T) {
	for _, tc := range []struct {
		name string
		db   string
		kind pagewire.FileKind
	}{
		{"app.db", "app.db", pagewire.FileDatabase},
		{"app.db-wal", "app.db", pagewire.FileWAL},
		{"app.db-shm", "app.db", pagewire.FileSHM},
		{"app.db-pos", "app.db", pagewire.FilePos},
		{"app.db-journal", "app.db", pagewire.FileJournal},
		{"x", "x", pagewire.FileDatabase},
		{".primary", "", pagewire.FilePrimary},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, kind, err := pagewire.ParseFileName(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if db != tc.db || kind != tc.kind {
				t.Fatalf("got (%q, %d), want (%q, %d)", db, kind, tc.db, tc.kind)
			}
			if got := pagewire.FileName(db, kind); got != tc.name {
				t.Fatalf("FileName=%q, want %q", got, tc.name)
			}
		})
	}
}

func TestParseFileName_Invalid(t *testing.T) {
	for _, name := range []string{"", ".", "..", "a/b", "a\x00b", ".hidden", "-wal", "x-wal-wal", "x-wal-shm", strings.Repeat("a", 300)} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := pagewire.ParseFileName(name); !errors.Is(err, pagewire.ErrInvalidName) {
				t.Fatalf("err=%v, want ErrInvalidName", err)
			}
		})
	}
}

func TestReadOnlyError_Is(t *testing.T) {
	var err error = &pagewire.ReadOnlyError{Primary: "node1", AdvertiseURL: "http://node1:20202"}
	if !errors.Is(err, pagewire.ErrReadOnly) {
		t.Fatal("errors.Is(ReadOnlyError, ErrReadOnly) is false")
	}
	if !strings.Contains(err.Error(), "node1") {
		t.Fatalf("error %q does not name the primary", err)
	}
}

func TestPos_String(t *testing.T) {
	p := pagewire.Pos{TXID: 3, Checksum: 0x8000000000000abc}
	if got, want := p.String(), "0000000000000003/8000000000000abc"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
