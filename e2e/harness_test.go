//go:build integration

package e2e

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/syncbuf"
	"github.com/pagewire/pagewire/internal/tlsfiles"
	"github.com/pagewire/pagewire/internal/tlsfiles/tlsfilestest"
)

// pagewireBin is the pagewire binary under test, and exampleBin the
// example app (deploy/example), built once by TestMain.
var pagewireBin, exampleBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pagewire-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pagewireBin = filepath.Join(dir, "pagewire")
	// Nodes run with the race detector, except in long runs that ask for
	// speed (PAGEWIRE_E2E_RACE=0).
	race := "-race"
	if os.Getenv("PAGEWIRE_E2E_RACE") == "0" {
		race = "-race=false"
	}
	build := exec.Command("go", "build", race, "-o", pagewireBin, "../cmd/pagewire")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build pagewire:", err)
		os.Exit(1)
	}
	exampleBin = filepath.Join(dir, "example")
	build = exec.Command("go", "build", "-o", exampleBin, "../deploy/example")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build the example app:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Node is one pagewire node running as its own process.
type Node struct {
	t          testing.TB
	Dir        string // the node's folder: config, mount and data below it
	MountDir   string
	DataDir    string
	ConfigPath string
	HTTPAddr   string   // 127.0.0.1:port, or NodeOptions.URL's host:port
	URL        string   // http://127.0.0.1:port, or NodeOptions.URL
	Args       []string // extra args after -config, e.g. "--", "cmd"
	Log        *syncbuf.Buffer
	// Hostname is a static replica's $HOSTNAME, its name on the primary.
	Hostname string
	// HTTP is a client for the node's port: it trusts the node's CA and
	// shows its certificate when the node has TLS.
	HTTP *http.Client

	exec []string // NodeOptions.Exec
	cmd  *exec.Cmd
	done chan struct{}
	err  error // the process's exit error, once done is closed
}

// NodeOptions changes how StartNode configures a node.
type NodeOptions struct {
	Config string   // extra YAML appended to the generated config
	Args   []string // extra args, e.g. {"--", "sh", "-c", "..."}
	// NoWait returns as soon as the process started, without waiting for
	// /healthz.
	NoWait bool
	// ReplicaOf makes the node a static-lease replica of that primary.
	ReplicaOf *Node
	// Retention sets data.retention (e.g. "15s"); "": the default.
	Retention string
	// DataDir, if set, is the node's data.dir (e.g. inside a faultfs
	// mount); "": a folder of its own under the node's folder.
	DataDir string
	// Data is more keys of the data section, each line indented by two
	// spaces (e.g. "  max-import-size: 1MiB\n").
	Data string
	// Lease replaces the lease section; {{URL}} in it is this node's URL.
	Lease string
	// Security, if set, puts auth and TLS on the node's port.
	Security *NodeSecurity
	// Exec runs the node under a command that execs it, e.g. {"nsenter",
	// "--net=/run/netns/x"} to run it in a network namespace. Such a node
	// is killed if the test process dies.
	Exec []string
	// URL is where the test reaches the node and its {{URL}} (e.g.
	// "http://[fdaa:0:1::2]:20202"); "": a free loopback port.
	URL string
	// Listen is the config's http.addr (e.g. "[::]:20202"); "": the
	// URL's host:port.
	Listen string
	// ConfigFile, if set, is a config file the node runs as it is (e.g.
	// ../deploy/fly/litefs.yml): StartNode writes none, and the mount and
	// data folders are the file's. Exec then usually runs the node in
	// namespaces of its own.
	ConfigFile string
	// Prepare, if set, runs once the node's folders are named and before
	// its config is written (it may move n.DataDir, e.g. onto a tmpfs it
	// mounts); cleanups it registers run after the node's.
	Prepare func(n *Node)
}

// NodeSecurity is a node's auth and TLS: its token, and a certificate from
// CA valid for 127.0.0.1 (the node's URL becomes https://).
type NodeSecurity struct {
	Token string
	CA    *tlsfilestest.CA // nil: no TLS
	// RequireClientCert sets tls.client-auth: require.
	RequireClientCert bool
}

// config is the auth and tls sections for a node named name, and the
// certificate it was given.
func (s *NodeSecurity) config(name string) (string, tlsfilestest.Pair) {
	var b strings.Builder
	if s.Token != "" {
		fmt.Fprintf(&b, "auth:\n  token: %q\n", s.Token)
	}
	if s.CA == nil {
		return b.String(), tlsfilestest.Pair{}
	}
	pair := s.CA.Issue(name, "127.0.0.1", "localhost")
	fmt.Fprintf(&b, "tls:\n  cert: %q\n  key: %q\n  ca: %q\n", pair.CertFile, pair.KeyFile, s.CA.CertFile)
	if s.RequireClientCert {
		b.WriteString("  client-auth: require\n")
	}
	return b.String(), pair
}

// StartNode writes a config for a single-node static primary under a new
// temp folder, starts `pagewire mount` and waits until /healthz says ready.
// Cleanup stops the node and makes sure its mount is gone.
func StartNode(t testing.TB, opts NodeOptions) *Node {
	t.Helper()
	dir := t.TempDir()
	n := &Node{t: t, Dir: dir, MountDir: filepath.Join(dir, "mnt"), DataDir: filepath.Join(dir, "data"),
		ConfigPath: filepath.Join(dir, "pagewire.yml"), Args: opts.Args, exec: opts.Exec}
	if opts.DataDir != "" {
		n.DataDir = opts.DataDir
	}
	if opts.URL != "" {
		n.URL = opts.URL
		n.HTTPAddr = strings.TrimPrefix(opts.URL, "http://")
	} else {
		n.HTTPAddr = freeAddr(t)
		n.URL = "http://" + n.HTTPAddr
	}
	listen := cmp.Or(opts.Listen, n.HTTPAddr)
	n.HTTP = http.DefaultClient
	security := ""
	if sec := opts.Security; sec != nil {
		var pair tlsfilestest.Pair
		security, pair = sec.config(strings.ReplaceAll(n.HTTPAddr, ":", "_"))
		if sec.CA != nil {
			n.URL = "https://" + n.HTTPAddr
			n.HTTP = tlsClient(t, sec.CA, pair)
		}
	}
	lease := "lease:\n  type: static\n  hostname: node1\n  candidate: true\n"
	if p := opts.ReplicaOf; p != nil {
		// As LiteFS's static lease: a replica names the primary.
		lease = fmt.Sprintf("lease:\n  type: static\n  hostname: node1\n  advertise-url: %q\n  candidate: false\n", p.URL)
		n.Hostname = "replica-" + n.HTTPAddr[strings.LastIndex(n.HTTPAddr, ":")+1:]
	}
	if opts.Lease != "" {
		lease = strings.ReplaceAll(opts.Lease, "{{URL}}", n.URL)
	}
	if opts.Prepare != nil {
		opts.Prepare(n)
	}
	data := fmt.Sprintf("data:\n  dir: %q\n", n.DataDir)
	if opts.Retention != "" {
		data += fmt.Sprintf("  retention: %s\n", opts.Retention)
	}
	data += opts.Data
	cfg := fmt.Sprintf("fuse:\n  dir: %q\n%shttp:\n  addr: %q\n%s%s%s",
		n.MountDir, data, listen, lease, security, opts.Config)
	if opts.ConfigFile != "" {
		n.ConfigPath = opts.ConfigFile
	} else if err := os.WriteFile(n.ConfigPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.cleanup)
	n.Start(opts.NoWait)
	return n
}

// Start starts the node's process (again) and, unless noWait, waits for it
// to be ready.
func (n *Node) Start(noWait bool) {
	n.t.Helper()
	n.Log = &syncbuf.Buffer{}
	args := append(append(append([]string(nil), n.exec...), pagewireBin, "mount", "-config", n.ConfigPath), n.Args...)
	n.cmd = exec.Command(args[0], args[1:]...)
	if n.exec != nil {
		n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	n.cmd.Dir = n.Dir
	n.cmd.Stdout, n.cmd.Stderr = n.Log, n.Log
	// The node's children (exec) find the mount in $PAGEWIRE_TEST_MNT.
	n.cmd.Env = append(os.Environ(), "PAGEWIRE_TEST_MNT="+n.MountDir)
	if n.Hostname != "" {
		n.cmd.Env = append(n.cmd.Env, "HOSTNAME="+n.Hostname)
	}
	// An app's orphaned children may keep the output pipe open; don't let
	// them hold up Wait.
	n.cmd.WaitDelay = 10 * time.Second
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.done = make(chan struct{})
	go func() {
		n.err = n.cmd.Wait()
		close(n.done)
	}()
	if noWait {
		return
	}
	ok := pollUntil(30*time.Second, func() bool {
		select {
		case <-n.done:
			return true
		default:
		}
		resp, err := n.HTTP.Get(n.URL + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	select {
	case <-n.done:
		n.t.Fatalf("node exited during start: %v\n%s", n.err, n.Log)
	default:
	}
	if !ok {
		n.t.Fatalf("node not ready after 30s:\n%s", n.Log)
	}
}

// Wait waits for the process to exit and returns its exit code.
func (n *Node) Wait(timeout time.Duration) int {
	n.t.Helper()
	select {
	case <-n.done:
	case <-time.After(timeout):
		n.t.Fatalf("node did not exit within %s:\n%s", timeout, n.Log)
	}
	if n.err == nil {
		return 0
	}
	if ee, ok := n.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	n.t.Fatalf("wait: %v", n.err)
	return -1
}

// Stop sends SIGTERM and waits for a clean exit (code 0).
func (n *Node) Stop() {
	n.t.Helper()
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	if code := n.Wait(30 * time.Second); code != 0 {
		n.t.Fatalf("node exited with code %d after SIGTERM:\n%s", code, n.Log)
	}
}

// Kill sends SIGKILL and waits for the process to be gone. The mount is
// left behind, stale, as after a crash.
func (n *Node) Kill() {
	n.t.Helper()
	_ = n.cmd.Process.Kill()
	<-n.done
}

// Running reports whether the process is still running.
func (n *Node) Running() bool {
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

func (n *Node) cleanup() {
	if n.cmd != nil && n.cmd.Process != nil && n.Running() {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.done:
		case <-time.After(15 * time.Second):
			_ = n.cmd.Process.Kill()
			<-n.done
		}
	}
	// Whatever happened, leave no mount behind: a node killed and started
	// again can leave a stale mount under its own, so detach until there
	// is none (EINVAL: not a mount point).
	for range 10 {
		if err := syscall.Unmount(n.MountDir, syscall.MNT_DETACH); err != nil {
			break
		}
	}
	if n.t.Failed() {
		n.t.Logf("node log:\n%s", n.Log)
	}
}

// Path is the path of a file on the node's mount.
func (n *Node) Path(name string) string { return filepath.Join(n.MountDir, name) }

// Pos reads a database's -pos file.
func (n *Node) Pos(db string) string {
	n.t.Helper()
	b, err := os.ReadFile(n.Path(db + "-pos"))
	if err != nil {
		n.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// HTTPGet fetches a path of the node's HTTP API and returns status and body.
func (n *Node) HTTPGet(path string) (int, string) {
	n.t.Helper()
	resp, err := n.HTTP.Get(n.URL + path)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// CLI runs a pagewire subcommand against this node and returns its combined
// output and exit code.
func (n *Node) CLI(args ...string) (string, int) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, pagewireBin, args...)
	cmd.Dir = n.Dir
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		n.t.Fatal(err)
	}
	return string(out), 0
}

// freeAddr returns a free loopback TCP address.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// pollUntil calls f every 20ms until it returns true or timeout passes.
func pollUntil(timeout time.Duration, f func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if f() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		t := time.NewTimer(20 * time.Millisecond)
		<-t.C
	}
}

// waitFor fails the test if f does not become true within timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, f func() bool) {
	t.Helper()
	if !pollUntil(timeout, f) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// python runs a Python 3 script with args and returns its stdout; it fails
// the test on a non-zero exit.
func python(t testing.TB, script string, args ...string) string {
	t.Helper()
	out, err := pythonErr(script, args...)
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	return out
}

// pythonErr runs a Python 3 script and returns its combined output and error.
func pythonErr(script string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "python3", append([]string{"-c", script}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// sqliteCLI runs the sqlite3 command-line shell on db with the given SQL.
func sqliteCLI(t testing.TB, db, sql string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sqlite3", db)
	cmd.Stdin = strings.NewReader(sql)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// readTestdata returns a file of testdata/ (e.g. a Python script for
// python()).
func readTestdata(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tlsClient is an HTTP client that trusts ca and shows pair.
func tlsClient(t testing.TB, ca *tlsfilestest.CA, pair tlsfilestest.Pair) *http.Client {
	t.Helper()
	f, err := tlsfiles.Load(pair.CertFile, pair.KeyFile, ca.CertFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: f.Client()}, Timeout: 30 * time.Second}
}
