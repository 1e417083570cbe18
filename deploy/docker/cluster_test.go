//go:build docker

package docker

import (
	"fmt"
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
