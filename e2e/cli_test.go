//go:build integration

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/syncbuf"
)

// This file tests the pagewire command line (DESIGN §3) and holds the
// helpers that config_test.go, exec_test.go and network_test.go share for
// running the binary with a config, working directory and environment of
// their own (StartNode always writes its own config).

// cliRun runs the pagewire binary with args in dir (a new temp dir when "")
// with env added to the test's environment, and returns its combined output
// and exit code. It fails the test if the process runs longer than timeout.
func cliRun(t testing.TB, dir string, env []string, timeout time.Duration, args ...string) (string, int) {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, pagewireBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("pagewire %s did not exit within %s:\n%s", strings.Join(args, " "), timeout, out)
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	case err != nil:
		t.Fatalf("run pagewire %s: %v", strings.Join(args, " "), err)
	}
	return string(out), 0
}

// cliProc is a long-running pagewire process the test started itself.
type cliProc struct {
	t    testing.TB
	cmd  *exec.Cmd
	log  *syncbuf.Buffer
	done chan struct{}
	err  error
}

// cliStart starts `pagewire args...` in dir with env as its whole
// environment (nil: the test's). Cleanup stops the process (SIGTERM, then
// SIGKILL) and detaches any mount left at the mountDirs.
func cliStart(t testing.TB, dir string, env []string, mountDirs []string, args ...string) *cliProc {
	t.Helper()
	p := &cliProc{t: t, log: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(pagewireBin, args...)
	p.cmd.Dir = dir
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.running() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(15 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
		for _, d := range mountDirs {
			_ = syscall.Unmount(d, syscall.MNT_DETACH)
		}
		if t.Failed() {
			t.Logf("pagewire %s log:\n%s", strings.Join(args, " "), p.log)
		}
	})
	return p
}

func (p *cliProc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig to the pagewire process.
func (p *cliProc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *cliProc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("pagewire did not exit within %s:\n%s", timeout, p.log)
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	}
	p.t.Fatalf("wait: %v", p.err)
	return -1
}

// waitHealthy polls baseURL/healthz until it answers 200; it fails the test
// if the process exits first or timeout passes.
func (p *cliProc) waitHealthy(baseURL string, timeout time.Duration) {
	p.t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	ok := pollUntil(timeout, func() bool {
		if !p.running() {
			return true
		}
		resp, err := client.Get(baseURL + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if !p.running() {
		p.t.Fatalf("pagewire exited before %s/healthz answered 200: %v\n%s", baseURL, p.err, p.log)
	}
	if !ok {
		p.t.Fatalf("%s/healthz did not answer 200 within %s:\n%s", baseURL, timeout, p.log)
	}
}

// cliEnv is the test's environment without the named variables, plus add.
func cliEnv(without []string, add ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, w := range without {
			drop = drop || name == w
		}
		if !drop {
			env = append(env, kv)
		}
	}
	return append(env, add...)
}

// cliMounts returns the mount points in /proc/mounts at or below dir.
func cliMounts(t testing.TB, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir = filepath.Clean(dir)
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		mp := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\134`, `\`).Replace(fields[1])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			found = append(found, mp+" ("+fields[2]+")")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return found
}

// cliMounted reports whether dir itself is a mount point.
func cliMounted(t testing.TB, dir string) bool {
	t.Helper()
	for _, m := range cliMounts(t, dir) {
		if strings.HasPrefix(m, filepath.Clean(dir)+" (") {
			return true
		}
	}
	return false
}

// cliMakeDB creates db on the node's mount with Python's sqlite3 and
// inserts rows rows, one transaction each.
func cliMakeDB(t testing.TB, n *Node, db string, rows int) {
	t.Helper()
	python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("create table if not exists t(id integer primary key, v text)")
for i in range(int(sys.argv[2])):
    c.execute("insert into t(v) values (?)", ("row %d" % i,))
c.close()
`, n.Path(db), fmt.Sprint(rows))
}

// TestCLI_Version checks that `pagewire version` prints a version.
func TestCLI_Version(t *testing.T) {
	out, code := cliRun(t, "", nil, time.Minute, "version")
	if code != 0 {
		t.Fatalf("pagewire version exited %d:\n%s", code, out)
	}
	if !regexp.MustCompile(`^pagewire \S+\n$`).MatchString(out) {
		t.Fatalf("pagewire version printed %q, want \"pagewire <version>\\n\"", out)
	}
}

// TestCLI_Usage checks that a missing or unknown command exits 2 with the
// usage text.
func TestCLI_Usage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string // in the output besides the usage text
	}{
		{name: "no args"},
		{name: "unknown command", args: []string{"frobnicate"}, want: []string{`unknown command "frobnicate"`}},
		{name: "unknown mount flag", args: []string{"mount", "-nosuchflag"}, want: []string{"-nosuchflag"}},
		{name: "status extra arg", args: []string{"status", "extra"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := cliRun(t, "", nil, time.Minute, tc.args...)
			if code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			for _, w := range append([]string{"usage:", "pagewire mount", "pagewire status", "pagewire export", "pagewire import", "pagewire version"}, tc.want...) {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		out, code := cliRun(t, "", nil, time.Minute, "help")
		if code != 0 || !strings.Contains(out, "usage:") {
			t.Fatalf("pagewire help: exit %d, output:\n%s", code, out)
		}
	})
}

// TestCLI_StatusDeadURL checks that status against a node that is not there
// fails and tells the user to check -url.
func TestCLI_StatusDeadURL(t *testing.T) {
	dead := "http://" + freeAddr(t) // nothing listens there any more
	out, code := cliRun(t, "", nil, 2*time.Minute, "status", "-url", dead)
	if code == 0 {
		t.Fatalf("status -url %s exited 0:\n%s", dead, out)
	}
	for _, w := range []string{dead, "check -url"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}

	t.Run("not a URL", func(t *testing.T) {
		out, code := cliRun(t, "", nil, time.Minute, "status", "-url", "localhost")
		if code == 0 || !strings.Contains(out, "-url") {
			t.Fatalf("status -url localhost: exit %d, output:\n%s", code, out)
		}
	})
}

// TestCLI_NameArgErrors checks the argument errors of export and import:
// each exits non-zero before talking to any node, with a message that names
// what is wrong.
func TestCLI_NameArgErrors(t *testing.T) {
	dir := t.TempDir()
	dead := "http://" + freeAddr(t)
	dst := filepath.Join(dir, "out.db")
	for _, cmd := range []string{"export", "import"} {
		for _, tc := range []struct {
			name string
			args []string
			want []string
		}{
			{"missing -name", []string{"-url", dead, dst}, []string{"-name is required"}},
			{"name with slash", []string{"-name", "a/b", "-url", dead, dst}, []string{"-name", `"a/b"`, "'/'"}},
			{"name with dot", []string{"-name", ".hidden", "-url", dead, dst}, []string{"-name", `".hidden"`}},
			{"name with sqlite suffix", []string{"-name", "x.db-wal", "-url", dead, dst}, []string{"-name", `"x.db-wal"`}},
			{"missing path", []string{"-name", "x.db", "-url", dead}, []string{cmd + ": the PATH", "required"}},
			{"two paths", []string{"-name", "x.db", "-url", dead, dst, dst}, []string{"usage:"}},
		} {
			t.Run(cmd+"/"+tc.name, func(t *testing.T) {
				out, code := cliRun(t, dir, nil, time.Minute, append([]string{cmd}, tc.args...)...)
				if code == 0 {
					t.Fatalf("exit code 0, want non-zero:\n%s", out)
				}
				for _, w := range tc.want {
					if !strings.Contains(out, w) {
						t.Errorf("output lacks %q:\n%s", w, out)
					}
				}
			})
		}
	}
	t.Run("import/no such file", func(t *testing.T) {
		missing := filepath.Join(dir, "nosuch-file.db")
		out, code := cliRun(t, dir, nil, time.Minute, "import", "-name", "x.db", "-url", dead, missing)
		if code == 0 || !strings.Contains(out, missing) || !strings.Contains(out, "no such file") {
			t.Fatalf("import of a missing file: exit %d, output:\n%s", code, out)
		}
	})
	if _, err := os.Stat(dst); err == nil {
		t.Errorf("%s was created by a failed command", dst)
	}
}

// TestCLI_AgainstNode runs status, export and import against a running
// primary.
func TestCLI_AgainstNode(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	cliMakeDB(t, n, "alpha.db", 3)
	cliMakeDB(t, n, "beta.db", 7)

	t.Run("status", func(t *testing.T) {
		out, code := n.CLI("status", "-url", n.URL)
		if code != 0 {
			t.Fatalf("status exited %d:\n%s", code, out)
		}
		for _, w := range []string{"hostname: node1", "role:     primary", "primary:  node1", "DATABASE", "TXID"} {
			if !strings.Contains(out, w) {
				t.Errorf("status output lacks %q:\n%s", w, out)
			}
		}
		for _, db := range []string{"alpha.db", "beta.db"} {
			txid := n.Pos(db)[:16]
			re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(db) + `\s+` + txid + `\s`)
			if !re.MatchString(out) {
				t.Errorf("status output has no row for %s at TXID %s:\n%s", db, txid, out)
			}
		}
	})

	t.Run("export not found", func(t *testing.T) {
		dir := t.TempDir()
		dst := filepath.Join(dir, "nosuch-copy.db")
		out, code := n.CLI("export", "-name", "nosuch.db", "-url", n.URL, dst)
		if code == 0 {
			t.Fatalf("export of a missing db exited 0:\n%s", out)
		}
		for _, w := range []string{"nosuch.db", "not found"} {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q:\n%s", w, out)
			}
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("failed export left files behind in %s: %v", dir, ents)
		}
	})

	t.Run("export and import", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "beta-copy.db")
		out, code := n.CLI("export", "-name", "beta.db", "-url", n.URL, dst)
		if code != 0 {
			t.Fatalf("export exited %d:\n%s", code, out)
		}
		if !strings.Contains(out, "exported beta.db") {
			t.Errorf("export output lacks \"exported beta.db\":\n%s", out)
		}
		// The exported file is a plain SQLite file holding every row.
		got := strings.TrimSpace(python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
print(c.execute("pragma integrity_check").fetchone()[0], c.execute("select count(*) from t").fetchone()[0])
`, dst))
		if want := "ok 7"; got != want {
			t.Fatalf("exported file: integrity and rows %q, want %q", got, want)
		}

		out, code = n.CLI("import", "-name", "gamma.db", "-url", n.URL, dst)
		if code != 0 {
			t.Fatalf("import exited %d:\n%s", code, out)
		}
		if !strings.Contains(out, "imported gamma.db") {
			t.Errorf("import output lacks \"imported gamma.db\":\n%s", out)
		}
		got = strings.TrimSpace(python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
print(c.execute("pragma journal_mode").fetchone()[0], c.execute("select count(*) from t").fetchone()[0])
`, n.Path("gamma.db")))
		if want := "wal 7"; got != want {
			t.Fatalf("imported gamma.db on the mount: journal mode and rows %q, want %q", got, want)
		}
		out, _ = n.CLI("status", "-url", n.URL)
		if !regexp.MustCompile(`(?m)^gamma\.db\s`).MatchString(out) {
			t.Errorf("status does not list gamma.db after import:\n%s", out)
		}
	})
}

// TestCLI_StatusWatch runs `pagewire status -watch` against a primary with
// one replica while an app writes: the table comes again every interval,
// with the database's commit rate and its replica, plain (no terminal
// codes) into a pipe and redrawn in place on a terminal (a pty from
// script(1)); Ctrl-C ends it with exit 0; a bad -interval is refused.
func TestCLI_StatusWatch(t *testing.T) {
	p, rs := startCluster(t, 1, "")
	cliMakeDB(t, p, "w.db", 3)
	waitCaughtUp(t, "w.db", p, rs...)

	w := cliStart(t, p.Dir, nil, nil, "status", "-watch", "-interval", "300ms", "-url", p.URL)
	writer := startPython(t, "writer", `
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
print("ready", flush=True)
while True:
    c.execute("insert into t(v) values ('watched')")
    time.sleep(0.01)
`, p.Path("w.db"))
	writer.WaitLines(1, 30*time.Second)
	row := regexp.MustCompile(`(?m)^w\.db\s+[0-9a-f]{16}\s+[0-9a-f]{16}\s+\d+\s+\d+\s+([0-9.]+) tx/s\s+1, max lag \d+ tx/\S+\s`)
	if !pollUntil(time.Minute, func() bool {
		for _, m := range row.FindAllStringSubmatch(w.log.String(), -1) {
			if m[1] != "0.0" {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("status -watch never showed w.db with a commit rate and its one replica:\n%s", w.log)
	}
	out := w.log.String()
	if n := strings.Count(out, "DATABASE"); n < 2 {
		t.Errorf("status -watch printed %d tables, want one per refresh:\n%s", n, out)
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("status -watch into a pipe printed terminal codes:\n%q", out)
	}
	w.signal(os.Interrupt)
	if code := w.wait(30 * time.Second); code != 0 {
		t.Errorf("status -watch after Ctrl-C: exit %d, want 0:\n%s", code, w.log)
	}

	// On a terminal: each refresh clears the screen and draws the table.
	cmd := "timeout -s INT 2 " + pagewireBin + " status -watch -interval 200ms -url " + p.URL
	tty, err := exec.Command("script", "-qec", cmd, "/dev/null").CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 124) { // 124: timeout sent the INT
		t.Fatalf("status -watch on a terminal: %v\n%s", err, tty)
	}
	if n := strings.Count(string(tty), "\x1b[H\x1b[2J"); n < 2 {
		t.Errorf("status -watch on a terminal cleared the screen %d times in 2 s at 200ms, want a redraw per refresh:\n%q", n, tty)
	}

	out, code := p.CLI("status", "-watch", "-interval", "0s", "-url", p.URL)
	if code != 1 || !strings.Contains(out, "status: -interval is 0s: use a positive duration such as 1s") {
		t.Errorf("status -interval 0s: exit %d, want 1 and why:\n%s", code, out)
	}
}
