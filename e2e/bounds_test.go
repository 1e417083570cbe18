//go:build integration

package e2e

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBounds_HostileImportsAndDamagedFiles: a node refuses imports that are
// no whole database (a 100-byte header claiming 2^32-1 pages, which once
// allocated 32 GiB) or are over data.max-import-size, saying what to do,
// with every database unchanged; and a node whose data.dir holds a database
// file claiming 2^32-1 pages (as an older version's import could leave
// one) still starts, with that database refusing writes until a good copy
// is imported over it.
func TestBounds_HostileImportsAndDamagedFiles(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	cliMakeDB(t, n, "good.db", 50)
	cliMakeDB(t, n, "bad.db", 5)
	good := n.Pos("good.db")
	rows := func(db string) string {
		return strings.TrimSpace(python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
print(c.execute("select count(*) from t").fetchone()[0])
`, n.Path(db)))
	}
	unchanged := func(t *testing.T) {
		t.Helper()
		if got := n.Pos("good.db"); got != good {
			t.Fatalf("good.db moved from %s to %s", good, got)
		}
		if got := rows("good.db"); got != "50" {
			t.Fatalf("good.db has %s rows, want 50", got)
		}
		if code, body := n.HTTPGet("/healthz"); code != 200 {
			t.Fatalf("/healthz: %d %s", code, body)
		}
	}

	// A header whose count is trusted (version-valid-for = change counter).
	header := func(pages int, count uint32) []byte {
		b := make([]byte, pages*4096)
		copy(b, "SQLite format 3\x00")
		binary.BigEndian.PutUint16(b[16:], 4096)
		b[18], b[19], b[21], b[22], b[23] = 1, 1, 64, 32, 32
		binary.BigEndian.PutUint32(b[24:], 1)
		binary.BigEndian.PutUint32(b[28:], count)
		binary.BigEndian.PutUint32(b[92:], 1)
		return b
	}
	importFile := func(t *testing.T, db string, file []byte) (string, int) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "import.db")
		if err := os.WriteFile(path, file, 0o644); err != nil {
			t.Fatal(err)
		}
		return n.CLI("import", "-name", db, "-url", n.URL, path)
	}

	for name, tc := range map[string]struct {
		file []byte
		want string
	}{
		"100 bytes claiming 2^32-1 pages": {header(1, 0xFFFFFFFF)[:100], "not a whole number of its 4096-byte pages"},
		"a page claiming 2^32-1 pages":    {header(1, 0xFFFFFFFF), "the header says the database has 4294967295 pages"},
		"3 pages claimed, 2 sent":         {header(2, 3), "but the file holds 2"},
	} {
		t.Run(name, func(t *testing.T) {
			for _, db := range []string{"good.db", "new.db"} {
				out, code := importFile(t, db, tc.file)
				if code == 0 || !strings.Contains(out, tc.want) {
					t.Fatalf("import into %s exited %d, want a failure saying %q:\n%s", db, code, tc.want, out)
				}
			}
			unchanged(t)
			if _, err := os.Stat(n.Path("new.db")); err == nil {
				t.Fatal("a refused import created new.db")
			}
		})
	}

	// A copy of good.db to import later, then a restart with a small
	// data.max-import-size and bad.db's file claiming 2^32-1 pages.
	goodCopy := filepath.Join(t.TempDir(), "good-copy.db")
	if out, code := n.CLI("export", "-name", "good.db", "-url", n.URL, goodCopy); code != 0 {
		t.Fatalf("export exited %d:\n%s", code, out)
	}
	n.Stop()
	cfg, err := os.ReadFile(n.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	dataLine := "data:\n"
	if !strings.Contains(string(cfg), dataLine) {
		t.Fatalf("the node's config has no data section:\n%s", cfg)
	}
	cfg = []byte(strings.Replace(string(cfg), dataLine, dataLine+"  max-import-size: 64KiB\n", 1))
	if err := os.WriteFile(n.ConfigPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(n.DataDir, "dbs", "bad.db", "database")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var hdr [100]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint32(hdr[28:], 0xFFFFFFFF)
	copy(hdr[92:96], hdr[24:28])
	if _, err := f.WriteAt(hdr[:], 0); err != nil {
		t.Fatal(err)
	}
	f.Close()

	t.Run("the node starts with the damaged file", func(t *testing.T) {
		n.Start(false) // fails the test unless /healthz turns 200
		unchanged(t)
		code, body := n.HTTPGet("/api/v1/dbs/bad.db")
		if code != 200 || !strings.Contains(body, "import a good copy") {
			t.Fatalf("/api/v1/dbs/bad.db: %d %s; want its error saying what to do", code, body)
		}
		if _, err := pythonErr(`
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("insert into t(v) values ('x')")
`, n.Path("bad.db")); err == nil {
			t.Fatal("a write to the damaged database succeeded")
		}
	})

	t.Run("an import over data.max-import-size", func(t *testing.T) {
		big := header(20, 20) // 80 KiB
		for _, db := range []string{"good.db", "new.db"} {
			out, code := importFile(t, db, big)
			if code == 0 || !strings.Contains(out, "data.max-import-size") {
				t.Fatalf("import of 80 KiB into %s exited %d, want a failure naming data.max-import-size:\n%s", db, code, out)
			}
		}
		unchanged(t)
	})

	t.Run("a good copy replaces the damaged file", func(t *testing.T) {
		if out, code := n.CLI("import", "-name", "bad.db", "-url", n.URL, goodCopy); code != 0 {
			t.Fatalf("import exited %d:\n%s", code, out)
		}
		if got := rows("bad.db"); got != "50" {
			t.Fatalf("bad.db has %s rows after the import, want 50", got)
		}
		if code, body := n.HTTPGet("/api/v1/dbs/bad.db"); code != 200 || strings.Contains(body, `"error"`) {
			t.Fatalf("/api/v1/dbs/bad.db: %d %s; want no error", code, body)
		}
		unchanged(t)
	})
}
