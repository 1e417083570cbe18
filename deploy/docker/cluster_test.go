//go:build docker

package docker

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// Two containers on the host network, a static primary and its replica:
// a write with sqlite3 in the primary's container is read in the
// replica's.
func TestStaticCluster_Replicates(t *testing.T) {
	pport, rport := freePort(t), freePort(t)
	primaryURL := fmt.Sprintf("http://127.0.0.1:%d", pport)
	primary := startContainer(t, "primary", pport, grant(newVolume(t, "primary"), writeConfig(t, staticConfig(pport, ""))))
	replica := startContainer(t, "replica", rport, grant(newVolume(t, "replica"), writeConfig(t, staticConfig(rport, primaryURL))))

	mustSQLite(t, primary, "app.db", "CREATE TABLE t(x TEXT); INSERT INTO t VALUES ('hello');")
	waitRow(t, replica, "app.db", "SELECT x FROM t", "hello")

	// The replica refuses writes.
	if out, err := sqlite(replica, "app.db", "INSERT INTO t VALUES ('no')"); err == nil {
		t.Fatalf("a write on the replica succeeded: %s", out)
	}
	mustSQLite(t, primary, "app.db", "INSERT INTO t VALUES ('again')")
	waitRow(t, replica, "app.db", "SELECT count(*) FROM t", "2")
}

// A node's data outlives its container: restarted, and replaced by a new
// container on the same volume, it has every database it had.
func TestRestart_KeepsVolume(t *testing.T) {
	port := freePort(t)
	vol, cfg := newVolume(t, "data"), writeConfig(t, staticConfig(port, ""))
	c := startContainer(t, "first", port, grant(vol, cfg))
	mustSQLite(t, c, "app.db", "CREATE TABLE t(x TEXT); INSERT INTO t VALUES ('kept');")

	// docker restart: the same container, stopped and started.
	if out, err := dockerOutput("restart", c); err != nil {
		t.Fatalf("docker restart: %v: %s", err, out)
	}
	waitHealthy(t, c, port)
	if got := mustSQLite(t, c, "app.db", "SELECT x FROM t"); got != "kept" {
		t.Fatalf("after docker restart: %q, want %q", got, "kept")
	}
	mustSQLite(t, c, "app.db", "INSERT INTO t VALUES ('after restart')")

	// A new container on the same volume.
	removeContainer(t, c)
	c = startContainer(t, "second", port, grant(vol, cfg))
	if got, want := mustSQLite(t, c, "app.db", "SELECT group_concat(x) FROM t"), "kept,after restart"; got != want {
		t.Fatalf("in a new container: %q, want %q", got, want)
	}
}

// The README's command: the image's default config (a single static
// primary on /litefs) and an app after "--", started once the mount is
// ready, whose output and exit code are the container's. No network: the
// node needs none (and :20202 on this host may be taken).
func TestDefaultConfig_RunsApp(t *testing.T) {
	o := runOptions{fuse: true, sysAdmin: true, volume: newVolume(t, "data"), network: "none",
		app: []string{"sqlite3", "/litefs/app.db", "CREATE TABLE t(x); INSERT INTO t VALUES (42); SELECT x FROM t;"}}
	c := name(t, "app")
	out, err := exec.Command("docker", append([]string{"run", "--rm"}, o.args(c)...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker run: %v:\n%s", err, out)
	}
	if !hasLine(out, "42") {
		t.Fatalf("the app's output lacks 42:\n%s", out)
	}

	// The database is in the volume: a second run sees it.
	o.app = []string{"sqlite3", "/litefs/app.db", "SELECT count(*) FROM t;"}
	out, err = exec.Command("docker", append([]string{"run", "--rm"}, o.args(c)...)...).CombinedOutput()
	if err != nil || !hasLine(out, "1") {
		t.Fatalf("second run: %v:\n%s", err, out)
	}
}

// hasLine reports whether out has a line that is exactly want: the app's
// output among the node's log lines.
func hasLine(out []byte, want string) bool {
	for _, l := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(l) == want {
			return true
		}
	}
	return false
}
