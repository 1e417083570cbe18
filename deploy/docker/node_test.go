//go:build docker

package docker

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// runOptions is how a test runs the image: which of FUSE's needs it
// grants, its data volume and its config.
type runOptions struct {
	fuse     bool     // --device /dev/fuse
	sysAdmin bool     // --cap-add SYS_ADMIN
	volume   string   // mounted at data.dir, /var/lib/pagewire
	readOnly bool     // the volume read-only
	config   string   // a config file, mounted at /etc/pagewire.yml
	extra    []string // more docker run flags
	app      []string // the command after --
	network  string   // docker run --network; "": host
}

// args is the docker run command line after "run": the host network
// unless o.network names another.
func (o runOptions) args(name string) []string {
	network := o.network
	if network == "" {
		network = "host"
	}
	args := []string{"--name", name, "--network", network}
	if o.fuse {
		args = append(args, "--device", "/dev/fuse")
	}
	if o.sysAdmin {
		args = append(args, "--cap-add", "SYS_ADMIN")
	}
	if o.volume != "" {
		v := o.volume + ":/var/lib/pagewire"
		if o.readOnly {
			v += ":ro"
		}
		args = append(args, "-v", v)
	}
	if o.config != "" {
		args = append(args, "-v", o.config+":/etc/pagewire.yml:ro")
	}
	args = append(args, o.extra...)
	args = append(args, image)
	if len(o.app) > 0 {
		args = append(append(args, "--"), o.app...)
	}
	return args
}

// grant is runOptions with everything FUSE needs in Docker.
func grant(volume, config string) runOptions {
	return runOptions{fuse: true, sysAdmin: true, volume: volume, config: config}
}

// name is a container or volume name for this test, removed by cleanupAll
// if the test's own cleanup does not.
func name(t testing.TB, what string) string {
	return prefix + strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-")) + "-" + what
}

// newVolume creates a named volume, removed when the test ends.
func newVolume(t testing.TB, what string) string {
	t.Helper()
	v := name(t, what)
	if out, err := dockerOutput("volume", "create", v); err != nil {
		t.Fatalf("docker volume create: %v: %s", err, out)
	}
	t.Cleanup(func() { _, _ = dockerOutput("volume", "rm", "-f", v) })
	return v
}

// writeConfig writes a config file for a container and returns its path.
func writeConfig(t testing.TB, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pagewire.yml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// staticConfig is a node's config: a static primary when primaryURL is
// "", else its replica. The API listens on loopback at port: the
// containers share the host's network.
func staticConfig(port int, primaryURL string) string {
	lease := fmt.Sprintf("  hostname: primary\n  advertise-url: \"http://127.0.0.1:%d\"\n  candidate: true\n", port)
	if primaryURL != "" {
		lease = fmt.Sprintf("  hostname: primary\n  advertise-url: %q\n  candidate: false\n", primaryURL)
	}
	return fmt.Sprintf("fuse:\n  dir: /litefs\ndata:\n  dir: /var/lib/pagewire\nhttp:\n  addr: \"127.0.0.1:%d\"\nlease:\n  type: static\n%s", port, lease)
}

// freePort is a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().(*net.TCPAddr).Port
}

// startContainer runs a node in the background and waits until its
// /healthz answers on port. The container is removed when the test ends,
// its log shown if the test failed.
func startContainer(t testing.TB, what string, port int, o runOptions) string {
	t.Helper()
	c := name(t, what)
	if out, err := dockerOutput(append([]string{"run", "-d"}, o.args(c)...)...); err != nil {
		t.Fatalf("docker run %s: %v: %s", c, err, out)
	}
	t.Cleanup(func() { removeContainer(t, c) })
	waitHealthy(t, c, port)
	return c
}

// removeContainer removes c, first logging its output if the test failed.
func removeContainer(t testing.TB, c string) {
	if t.Failed() {
		out, _ := dockerOutput("logs", "--tail", "40", c)
		t.Logf("container %s's last log lines:\n%s", c, out)
	}
	_, _ = dockerOutput("rm", "-f", c)
}

// waitHealthy waits until the node in container c answers /healthz with
// 200 on port.
func waitHealthy(t testing.TB, c string, port int) {
	t.Helper()
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", port)
	waitFor(t, 60*time.Second, "container "+c+" to be healthy", func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// poll reports whether cond held before timeout passed.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-time.After(200 * time.Millisecond)
	}
	return true
}

// sqlite runs the sqlite3 CLI inside container c on a database on the
// mount and returns its trimmed output.
func sqlite(c, db, sql string) (string, error) {
	out, err := dockerOutput("exec", c, "sqlite3", "-bail", "-cmd", ".timeout 5000", "/litefs/"+db, sql)
	return strings.TrimSpace(string(out)), err
}

// mustSQLite is sqlite that fails the test on an error.
func mustSQLite(t testing.TB, c, db, sql string) string {
	t.Helper()
	out, err := sqlite(c, db, sql)
	if err != nil {
		t.Fatalf("sqlite3 in %s: %q: %v: %s", c, sql, err, out)
	}
	return out
}

// waitRow waits until query's output in container c is want.
func waitRow(t testing.TB, c, db, query, want string) {
	t.Helper()
	var got string
	if !poll(30*time.Second, func() bool { got, _ = sqlite(c, db, query); return got == want }) {
		t.Fatalf("%q in %s gives %q, want %q", query, c, got, want)
	}
}
