package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/backup"
	"github.com/pagewire/pagewire/config"
	"github.com/pagewire/pagewire/engine"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func TestParseRestoreFlags(t *testing.T) {
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		args []string
		want restoreArgs
	}{
		{"Newest", []string{"-name", "app.db"}, restoreArgs{name: "app.db"}},
		{"DecimalTXID", []string{"-name", "app.db", "-txid", "42", "-o", "out.db"}, restoreArgs{name: "app.db", txid: 42, output: "out.db"}},
		{"HexTXID", []string{"-name", "app.db", "-txid", "000000000000002a"}, restoreArgs{name: "app.db", txid: 42}},
		{"Timestamp", []string{"-name", "app.db", "-timestamp", "2024-05-01T14:00:00+02:00", "-config", "c.yml"}, restoreArgs{name: "app.db", at: at, configPath: "c.yml"}},
		{"TimestampMillis", []string{"-name", "app.db", "-timestamp", "2024-05-01T12:00:00.250Z"}, restoreArgs{name: "app.db", at: at.Add(250 * time.Millisecond)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseRestoreFlags(tc.args)
			if err != nil {
				t.Fatal(err)
			}
			if got.name != tc.want.name || got.txid != tc.want.txid || !got.at.Equal(tc.want.at) || got.output != tc.want.output || got.configPath != tc.want.configPath {
				t.Fatalf("parsed %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseRestoreFlags_Errors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		usage bool   // a usage error: exit 2 with the usage
		want  string // in the message
	}{
		{"NoName", []string{"-txid", "3"}, true, "-name is required"},
		{"TXIDAndTimestamp", []string{"-name", "a.db", "-txid", "3", "-timestamp", "2024-05-01T12:00:00Z"}, true, "cannot be used together"},
		{"OutputAndURL", []string{"-name", "a.db", "-o", "x.db", "-url", "http://localhost:1"}, true, "-o restores offline"},
		{"Argument", []string{"-name", "a.db", "x.db"}, true, "after -o"},
		{"UnknownFlag", []string{"-name", "a.db", "-at", "x"}, true, ""},
		{"BadName", []string{"-name", "../a.db"}, false, "-name"},
		{"TXIDZero", []string{"-name", "a.db", "-txid", "0"}, false, "transactions start at 1"},
		{"TXIDWords", []string{"-name", "a.db", "-txid", "latest"}, false, "is not a transaction"},
		{"TXIDNegative", []string{"-name", "a.db", "-txid", "-4"}, false, "is not a transaction"},
		{"TXIDBadHex", []string{"-name", "a.db", "-txid", "00000000000000zz"}, false, "is not a transaction"},
		{"TimestampNotRFC3339", []string{"-name", "a.db", "-timestamp", "2024-05-01 12:00"}, false, "RFC 3339"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseRestoreFlags(tc.args)
			if err == nil {
				t.Fatal("parsed, want an error")
			}
			if got := errors.Is(err, errUsage); got != tc.usage {
				t.Errorf("%v: a usage error %v, want %v", err, got, tc.usage)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to say %q", err, tc.want)
			}
		})
	}
}

func TestRunBackup_Usage(t *testing.T) {
	for _, args := range [][]string{nil, {"rm"}, {"ls", "extra"}, {"ls", "-txid", "3"}} {
		if err := runBackup(context.Background(), args, io.Discard); !errors.Is(err, errUsage) {
			t.Errorf("backup %q: %v, want a usage error", args, err)
		}
	}
}

func TestLoadBackupConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, yaml string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}

	t.Run("File", func(t *testing.T) {
		path := write("file.yml", "backup:\n  type: file\n  path: "+filepath.Join(dir, "bk")+"\n")
		b, err := loadBackupConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := b.Kind(), config.BackupTypeFile; got != want {
			t.Fatalf("Kind()=%q, want %q", got, want)
		}
	})
	t.Run("None", func(t *testing.T) {
		path := write("none.yml", "data:\n  dir: "+filepath.Join(dir, "data")+"\n")
		_, err := loadBackupConfig(path)
		if err == nil || !strings.Contains(err.Error(), path+" configures no backup") {
			t.Fatalf("%v, want it to say %s configures no backup", err, path)
		}
	})
	t.Run("NoConfigFile", func(t *testing.T) {
		if _, err := os.Stat("/etc/pagewire.yml"); err == nil {
			t.Skip("/etc/pagewire.yml exists")
		}
		if _, err := os.Stat("/etc/litefs.yml"); err == nil {
			t.Skip("/etc/litefs.yml exists")
		}
		t.Chdir(t.TempDir())
		_, err := loadBackupConfig("")
		if err == nil || !strings.Contains(err.Error(), "pass the node's config with -config") {
			t.Fatalf("%v, want it to ask for -config", err)
		}
	})
}

func TestOverrideRestoreOnStart(t *testing.T) {
	on := config.BackupConfig{Type: config.BackupTypeFile, Path: "/backups"}
	for _, tc := range []struct {
		name    string
		args    []string
		cfg     config.BackupConfig
		want    bool
		wantErr string
	}{
		{"Unset", nil, config.BackupConfig{Type: on.Type, Path: on.Path, RestoreOnStart: true}, true, ""},
		{"On", []string{"-restore-on-start"}, on, true, ""},
		{"Off", []string{"-restore-on-start=false"}, config.BackupConfig{Type: on.Type, Path: on.Path, RestoreOnStart: true}, false, ""},
		{"OnWithoutBackup", []string{"-restore-on-start"}, config.BackupConfig{}, false, "needs a backup"},
		{"OffWithoutBackup", []string{"-restore-on-start=false"}, config.BackupConfig{}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fset := flag.NewFlagSet("mount", flag.ContinueOnError)
			restore := fset.Bool("restore-on-start", false, "")
			if err := fset.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			cfg := tc.cfg
			err := overrideRestoreOnStart(fset, *restore, &cfg, "test.yml")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("%v, want an error saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.RestoreOnStart != tc.want {
				t.Fatalf("RestoreOnStart=%v, want %v", cfg.RestoreOnStart, tc.want)
			}
		})
	}
}

// TestPrintPoints checks `pagewire backup ls -name DB`'s table against
// testdata/backup_ls.golden (go test -run TestPrintPoints -update
// rewrites it).
func TestPrintPoints(t *testing.T) {
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 250e6, time.UTC)
	points := []backup.Point{
		{Segment: "0000000000000001-00000000", Kind: "snapshot", Min: 1, Max: 1, From: t0, To: t0, Objects: 1, Size: 812},
		{Segment: "0000000000000001-00000000", Kind: "transactions", Min: 2, Max: 300, From: t0.Add(time.Second), To: t0.Add(time.Hour), Objects: 40, Size: 5 << 20},
		{Segment: "0000000000000002-00000000", Kind: "transactions", Min: 301, Max: 0x1234, From: t0.Add(2 * time.Hour), To: t0.Add(26 * time.Hour), Objects: 1200, Size: 3<<30 + 1<<29},
	}
	var buf bytes.Buffer
	if err := printPoints(&buf, points); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "backup_ls.golden")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != string(want) {
		t.Fatalf("backup ls printed:\n%s\nwant (%s):\n%s", got, golden, want)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB", 2 << 40: "2.0 TiB", 5000 << 40: "5000.0 TiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d)=%q, want %q", n, got, want)
		}
	}
}

// TestProgress_Quiet: no terminal, no bar, and nothing written.
func TestProgress_Quiet(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := newProgress(f, "restoring")
	p.update(10, 100)
	p.update(100, 100)
	p.done()
	if st, err := f.Stat(); err != nil || st.Size() != 0 || p.bar != nil {
		t.Fatalf("a progress bar on a file that is no terminal: %d bytes written (%v)", st.Size(), err)
	}
}

// TestPageReader: a database file comes in batches of restoreBatch pages,
// numbered from 1, then nil.
func TestPageReader(t *testing.T) {
	const pageSize, count = 512, 2*restoreBatch + 7
	data := make([]byte, pageSize*count)
	for i := range count {
		data[i*pageSize] = byte(i)
	}
	next := pageReader(bytes.NewReader(data), pageSize, count)
	var got []int
	want := uint32(1)
	for {
		pages, err := next()
		if err != nil {
			t.Fatal(err)
		}
		if pages == nil {
			break
		}
		got = append(got, len(pages))
		for _, p := range pages {
			if p.Pgno != want || len(p.Data) != pageSize || p.Data[0] != byte(want-1) {
				t.Fatalf("page %d (of %d bytes, first byte %d), want page %d", p.Pgno, len(p.Data), p.Data[0], want)
			}
			want++
		}
	}
	if len(got) != 3 || got[0] != restoreBatch || got[2] != 7 {
		t.Fatalf("batches of %v pages, want %d, %d, 7", got, restoreBatch, restoreBatch)
	}

	// A file shorter than its page count says so.
	next = pageReader(bytes.NewReader(data[:pageSize*3]), pageSize, 4)
	if _, err := next(); err == nil || !strings.Contains(err.Error(), "page 1") {
		t.Fatalf("a short file: %v, want an error about its pages", err)
	}
}

// TestRestoreOnStart covers what needs no backup made by a primary: off,
// a data.dir with databases, an empty backup, a database with no restore
// point yet, and a corrupt backup, which stops the start with an error
// that names the object and says what to do. A real restore on start runs
// in e2e (TestBackup_RestoreOnStart).
func TestRestoreOnStart(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	openStore := func(t *testing.T) (*engine.Store, string) {
		dir := t.TempDir()
		scfg := engine.DefaultStoreConfig()
		scfg.Dir, scfg.Logger = dir, log
		s, err := engine.OpenStore(scfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s, dir
	}
	backupIn := func(t *testing.T, files map[string]string) config.BackupConfig {
		dir := t.TempDir()
		for name, content := range files {
			path := filepath.Join(dir, filepath.FromSlash(name))
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return config.BackupConfig{Type: config.BackupTypeFile, Path: dir, RestoreOnStart: true}
	}
	const begin = "0000000000000001-00000000/begin.json"

	t.Run("Off", func(t *testing.T) {
		store, dir := openStore(t)
		cfg := backupIn(t, map[string]string{"a.db/" + begin: "not json"})
		cfg.RestoreOnStart = false
		if err := restoreOnStart(ctx, log, cfg, store, dir); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("HasDatabases", func(t *testing.T) {
		store, dir := openStore(t)
		if err := store.CreateDatabase("mine.db", 4096); err != nil {
			t.Fatal(err)
		}
		cfg := backupIn(t, map[string]string{"a.db/" + begin: "not json"})
		if err := restoreOnStart(ctx, log, cfg, store, dir); err != nil {
			t.Fatal(err)
		}
		if got := store.DatabaseNames(); len(got) != 1 || got[0] != "mine.db" {
			t.Fatalf("databases %v, want only mine.db", got)
		}
	})
	t.Run("EmptyBackup", func(t *testing.T) {
		store, dir := openStore(t)
		if err := restoreOnStart(ctx, log, backupIn(t, nil), store, dir); err != nil {
			t.Fatal(err)
		}
		if got := store.DatabaseNames(); len(got) != 0 {
			t.Fatalf("databases %v, want none", got)
		}
	})
	t.Run("NoRestorePointYet", func(t *testing.T) {
		store, dir := openStore(t)
		cfg := backupIn(t, map[string]string{"a.db/" + begin: `{"prev_head":0,"node":"n1"}`})
		if err := restoreOnStart(ctx, log, cfg, store, dir); err != nil {
			t.Fatal(err)
		}
		if got := store.DatabaseNames(); len(got) != 0 {
			t.Fatalf("databases %v, want none", got)
		}
	})
	t.Run("Corrupt", func(t *testing.T) {
		store, dir := openStore(t)
		cfg := backupIn(t, map[string]string{"a.db/" + begin: "not json"})
		err := restoreOnStart(ctx, log, cfg, store, dir)
		if !errors.Is(err, pagewire.ErrCorrupt) || !strings.Contains(err.Error(), "a.db/"+begin) || !strings.Contains(err.Error(), "-restore-on-start=false") {
			t.Fatalf("%v, want ErrCorrupt naming a.db/%s and what to do", err, begin)
		}
		if got := store.DatabaseNames(); len(got) != 0 {
			t.Fatalf("databases %v, want none", got)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, restoreTempPrefix+"*")); len(left) != 0 {
			t.Fatalf("left behind: %v", left)
		}
	})
}
