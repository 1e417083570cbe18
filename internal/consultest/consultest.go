package consultest

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/syncbuf"
)

// Version is the Consul release deploy/consul builds.
const Version = "1.14.11"

// DefaultPath is where `make consul` puts the agent binary.
func DefaultPath() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "pagewire", "consul-"+Version)
}

// Binary returns the agent binary's path, or an error that says how to
// build it.
func Binary() (string, error) {
	path := os.Getenv("CONSUL_BIN")
	if path == "" {
		path = DefaultPath()
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("no Consul agent at %s: run `make consul` (builds deploy/consul once) or set CONSUL_BIN: %w", path, err)
	}
	return path, nil
}

// Agent is a running dev agent.
type Agent struct {
	URL  string // http://127.0.0.1:port, or http://[addr]:8500
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan struct{}
	once sync.Once
}

// Start runs a dev agent on free loopback ports, waits until it has a
// leader, and stops it when the test ends.
func Start(t testing.TB) *Agent {
	t.Helper()
	return StartWith(t, Options{})
}

// Options change where StartWith runs the agent.
type Options struct {
	// Prefix runs the agent under a command, e.g. {"nsenter",
	// "--net=/run/netns/x"} to run it in a network namespace. The command
	// must exec the agent (not fork it), so that killing the process kills
	// the agent.
	Prefix []string
	// Addr is the IP address the agent binds and serves on; "" is
	// 127.0.0.1 on free ports. With Addr set the agent takes Consul's
	// default ports (8500 for HTTP), as in a namespace of its own.
	Addr string
}

// StartWith runs a dev agent as opts say, waits until it has a leader, and
// stops it when the test ends.
func StartWith(t testing.TB, opts Options) *Agent {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}

	// A dev agent on four ports, with DNS and gRPC off, logging into a buffer.
	addr, ports := opts.Addr, []int{8500, 8301, 8302, 8300}
	if addr == "" {
		addr, ports = "127.0.0.1", freePorts(t, 4)
	}
	a := &Agent{URL: "http://" + net.JoinHostPort(addr, strconv.Itoa(ports[0])), out: &syncbuf.Buffer{}, done: make(chan struct{})}
	args := append(append([]string(nil), opts.Prefix...), bin, "agent", "-dev", "-node", "pagewire-test",
		"-bind", addr, "-client", addr,
		"-http-port", strconv.Itoa(ports[0]), "-serf-lan-port", strconv.Itoa(ports[1]),
		"-serf-wan-port", strconv.Itoa(ports[2]), "-server-port", strconv.Itoa(ports[3]),
		"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1", "-log-level", "warn")
	a.cmd = exec.Command(args[0], args[1:]...)
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}

	// Reap it when it exits; the test kills it at cleanup.
	go func() {
		_ = a.cmd.Wait()
		close(a.done)
	}()
	t.Cleanup(a.Kill)

	// Wait up to 30 s for it to have a leader.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(a.URL + "/v1/status/leader")
		if err == nil {
			var body bytes.Buffer
			_, _ = body.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && len(bytes.Trim(body.Bytes(), "\" \n")) > 0 {
				return a
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("consul agent has no leader after 30 s:\n%s", a.out.String())
		}
		select {
		case <-a.done:
			t.Fatalf("consul agent exited while starting:\n%s", a.out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Kill stops the agent at once (SIGKILL) and waits for it. Calls after the
// first do nothing.
func (a *Agent) Kill() {
	a.once.Do(func() {
		_ = a.cmd.Process.Kill()
		<-a.done
	})
}

// Log is what the agent printed.
func (a *Agent) Log() string { return a.out.String() }

// freePorts returns n distinct free TCP ports on loopback.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}
