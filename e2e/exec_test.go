//go:build integration

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests cover the app pagewire runs: `pagewire mount -- CMD` and the
// exec key (DESIGN §3, §4), and how signals stop a node.

// writeScript writes a script file into a new temp folder and returns
// its path.
func writeScript(t testing.TB, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// assertUnmounted checks, before the node's cleanup runs, that the
// node's mount is gone.
func assertUnmounted(t testing.TB, n *Node) {
	t.Helper()
	if cliMounted(t, n.MountDir) {
		t.Errorf("%s is still mounted after pagewire exited", n.MountDir)
	}
}

// TestMountExec_ExitCode checks that pagewire exits with the app's exit
// code, after unmounting.
func TestMountExec_ExitCode(t *testing.T) {
	// The app exits 7 only if it sees the mount (its working directory is
	// the node's folder); anything else fails the test.
	n := StartNode(t, NodeOptions{Args: []string{"--", "sh", "-c", `grep -q " $PWD/mnt fuse" /proc/mounts && exit 7`}, NoWait: true})
	if code := n.Wait(2 * time.Minute); code != 7 {
		t.Fatalf("pagewire exited %d, want the app's 7:\n%s", code, n.Log)
	}
	assertUnmounted(t, n)
}

// TestMountExec_AppUsesMount runs a Python app with `--`: it must start only
// once the mount is up and /healthz says ready, and its writes must stay on
// the node.
func TestMountExec_AppUsesMount(t *testing.T) {
	// The app runs in the node's folder (pagewire's working directory), so
	// mnt/ is the mount and pagewire.yml the node's config.
	app := readTestdata(t, "exec_app.py")
	n := StartNode(t, NodeOptions{Args: []string{"--", "python3", "-c", app}, NoWait: true})
	if code := n.Wait(3 * time.Minute); code != 0 {
		t.Fatalf("pagewire exited %d, want 0 from the app:\n%s", code, n.Log)
	}
	for _, w := range []string{"app-healthz 200", "app-rows 5"} {
		if !strings.Contains(n.Log.String(), w) {
			t.Errorf("node output lacks %q:\n%s", w, n.Log)
		}
	}
	assertUnmounted(t, n)

	// The app's writes are there after a restart without the app.
	n.Args = nil
	n.Start(false)
	got := strings.TrimSpace(python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
print(c.execute("select count(*) from t").fetchone()[0])
`, n.Path("app.db")))
	if got != "5" {
		t.Fatalf("rows in app.db after restart = %s, want 5", got)
	}
	n.Stop()
}

// TestMountExec_ForwardsSIGTERM checks that SIGTERM sent to pagewire while
// the app runs reaches the app, and that pagewire exits with the app's code.
func TestMountExec_ForwardsSIGTERM(t *testing.T) {
	script := `trap "echo got-term; exit 3" TERM; echo child-ready; while :; do sleep 0.1; done`
	n := StartNode(t, NodeOptions{Args: []string{"--", "sh", "-c", script}})
	waitFor(t, time.Minute, "the app to install its trap", func() bool {
		// Its own output line: the "started app" log line quotes the
		// script, child-ready included, before the trap is in place.
		return strings.Contains(n.Log.String(), "\nchild-ready\n")
	})
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := n.Wait(time.Minute); code != 3 {
		t.Fatalf("pagewire exited %d after SIGTERM, want the app's 3:\n%s", code, n.Log)
	}
	if !strings.Contains(n.Log.String(), "got-term") {
		t.Errorf("the app did not get SIGTERM:\n%s", n.Log)
	}
	assertUnmounted(t, n)
}

// TestMountExec_ConfigString runs exec given as a single command string.
func TestMountExec_ConfigString(t *testing.T) {
	script := writeScript(t, "app.py", `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("create table t(v)")
c.execute("insert into t values ('from-exec-string')")
print("exec-string", c.execute("select v from t").fetchone()[0], flush=True)
`)
	n := StartNode(t, NodeOptions{Config: "exec: \"python3 " + script + " mnt/str.db\"\n", NoWait: true})
	if code := n.Wait(3 * time.Minute); code != 0 {
		t.Fatalf("pagewire exited %d, want 0 from the exec command:\n%s", code, n.Log)
	}
	if !strings.Contains(n.Log.String(), "exec-string from-exec-string") {
		t.Errorf("node output lacks the exec command's output:\n%s", n.Log)
	}
	assertUnmounted(t, n)
}

// TestMountExec_ConfigListInOrder runs exec given as a list of {cmd,
// if-candidate}: the migration must run to completion before the app.
func TestMountExec_ConfigListInOrder(t *testing.T) {
	migrate := writeScript(t, "migrate.py", `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("create table t(id integer primary key, v text)")
c.execute("insert into t(v) values ('migrated')")
c.close()
print("migrate-done", flush=True)
`)
	app := writeScript(t, "app.py", `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("insert into t(v) values ('app')")  # fails if migrate has not run
print("app-rows", ",".join(r[0] for r in c.execute("select v from t order by id")), flush=True)
`)
	cfg := "exec:\n" +
		"  - cmd: \"python3 " + migrate + " mnt/app.db\"\n" +
		"    if-candidate: true\n" +
		"  - cmd: \"python3 " + app + " mnt/app.db\"\n"
	n := StartNode(t, NodeOptions{Config: cfg, NoWait: true})
	if code := n.Wait(3 * time.Minute); code != 0 {
		t.Fatalf("pagewire exited %d, want 0 from the app:\n%s", code, n.Log)
	}
	log := n.Log.String()
	mi, ai := strings.Index(log, "migrate-done"), strings.Index(log, "app-rows migrated,app")
	if mi < 0 || ai < 0 || mi > ai {
		t.Errorf("want migrate-done, then app-rows migrated,app in the output:\n%s", log)
	}
	assertUnmounted(t, n)
}

// TestMountExec_FailingStep checks that a failing early exec step stops the
// node with a non-zero exit and a clear message, and the app never starts.
func TestMountExec_FailingStep(t *testing.T) {
	cfg := "exec:\n" +
		"  - \"sh -c 'echo migrate-failing; exit 4'\"\n" +
		"  - cmd: \"echo APP_STARTED_MARKER\"\n"
	n := StartNode(t, NodeOptions{Config: cfg, NoWait: true})
	code := n.Wait(2 * time.Minute)
	if code == 0 {
		t.Fatalf("pagewire exited 0 after a failing exec step:\n%s", n.Log)
	}
	log := n.Log.String()
	for _, w := range []string{"migrate-failing", "exit code 4", "the app was not started"} {
		if !strings.Contains(log, w) {
			t.Errorf("output lacks %q:\n%s", w, log)
		}
	}
	if strings.Contains(log, "APP_STARTED_MARKER") {
		t.Errorf("the app ran after the failing step:\n%s", log)
	}
	assertUnmounted(t, n)
}

// TestMount_SignalStops checks that SIGINT and SIGTERM stop a node that has
// no app with exit code 0 and its mount gone.
func TestMount_SignalStops(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			n := StartNode(t, NodeOptions{})
			cliMakeDB(t, n, "sig.db", 2)
			if !cliMounted(t, n.MountDir) {
				t.Fatalf("%s is not mounted", n.MountDir)
			}
			if err := n.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if code := n.Wait(time.Minute); code != 0 {
				t.Fatalf("pagewire exited %d after %v, want 0:\n%s", code, sig, n.Log)
			}
			assertUnmounted(t, n)
		})
	}
}

// TestMount_SignalDuringStartup sends SIGTERM as soon as the node logs that
// it is starting, before it is ready: the node must still stop, with exit
// code 0 and no mount left, and never start the app.
func TestMount_SignalDuringStartup(t *testing.T) {
	n := StartNode(t, NodeOptions{Args: []string{"--", "sh", "-c", "echo APP_STARTED_MARKER; exec sleep 600"}, NoWait: true})
	// Poll without sleeping: the window before the node is ready is short.
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(n.Log.String(), "starting pagewire") {
		if time.Now().After(deadline) || !n.Running() {
			t.Fatalf("node did not log \"starting pagewire\":\n%s", n.Log)
		}
	}
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// A generous deadline: a node that lost the signal never exits.
	if !pollUntil(30*time.Second, func() bool { return !n.Running() }) {
		t.Fatalf("node still running 30s after a SIGTERM sent during startup:\n%s", n.Log)
	}
	if code := n.Wait(time.Second); code != 0 {
		t.Errorf("pagewire exited %d after SIGTERM during startup, want 0:\n%s", code, n.Log)
	}
	assertUnmounted(t, n)
}

// TestMountExec_CommandNotFound checks that an app that cannot be started
// stops the node with a non-zero exit and a message naming the command.
func TestMountExec_CommandNotFound(t *testing.T) {
	n := StartNode(t, NodeOptions{Args: []string{"--", "pagewire-e2e-no-such-command", "arg"}, NoWait: true})
	if code := n.Wait(2 * time.Minute); code == 0 {
		t.Fatalf("pagewire exited 0 with a missing app:\n%s", n.Log)
	}
	for _, w := range []string{"pagewire-e2e-no-such-command", "not found"} {
		if !strings.Contains(n.Log.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, n.Log)
		}
	}
	assertUnmounted(t, n)
}
