package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	nodeReadyTimeout = 60 * time.Second // the machine may be busy with other tests
	nodeStopTimeout  = 30 * time.Second // after SIGTERM, before SIGKILL
)

// node is one `pagewire mount` process: a static-lease primary, or a
// replica of one, whose mount, data and log live under one folder. The
// harness never writes through a mount (a FUSE server's process must not use
// its own mount, and the node is another process anyway); the Python
// workloads do, and the harness only reads -pos files.
type node struct {
	Name     string // for messages: "node", "primary", "replica 1", ...
	MountDir string
	DataDir  string
	LogPath  string
	URL      string // http://127.0.0.1:port

	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the process has exited
	err  error         // the process's exit error, once done is closed

	stopped bool // stop has run
}

// nodeSpec says how to configure a node.
type nodeSpec struct {
	Name string // for messages
	Dir  string // its folder, made if absent: pagewire.yml, mnt, data and node.log below it
	// Primary, if not nil, makes the node a static-lease replica of that
	// node; otherwise the node is the primary (candidate).
	Primary *node
	// Config is YAML appended to the node's config (e.g. a proxy section).
	Config string
	// Exec, if set, is the app the node runs once ready (after "--").
	Exec []string
	// Args are more flags of pagewire mount (e.g. -external-fuse).
	Args []string
}

// primaryHostname is the static lease's hostname: a primary's own, and the
// one its replicas name.
const primaryHostname = "bench"

// startNode starts a node and waits until its /healthz says ready. On error
// nothing is left running or mounted.
func startNode(ctx context.Context, bin string, spec nodeSpec) (*node, error) {
	n, err := launchNode(bin, spec)
	if err != nil {
		return nil, err
	}
	if err := n.waitReady(ctx, 50*time.Millisecond); err != nil {
		return nil, errors.Join(err, n.stop())
	}
	return n, nil
}

// launchNode writes a config under spec.Dir and starts bin as a node,
// without waiting for it to be ready. The caller must call stop.
func launchNode(bin string, spec nodeSpec) (*node, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(spec.Dir, 0o755); err != nil {
		return nil, err
	}

	// The node's files all live under spec.Dir.
	n := &node{
		Name:     spec.Name,
		MountDir: filepath.Join(spec.Dir, "mnt"),
		DataDir:  filepath.Join(spec.Dir, "data"),
		LogPath:  filepath.Join(spec.Dir, "node.log"),
		URL:      "http://" + addr,
	}
	if n.Name == "" {
		n.Name = "node"
	}

	// As LiteFS's static lease: a replica names the primary's hostname and
	// advertise URL, and is not a candidate.
	// A primary advertises its loopback URL: replicas' proxies reach its
	// proxy at that host.
	lease := fmt.Sprintf("lease:\n  type: static\n  hostname: %s\n  advertise-url: %q\n  candidate: true\n", primaryHostname, n.URL)
	if spec.Primary != nil {
		lease = fmt.Sprintf("lease:\n  type: static\n  hostname: %s\n  advertise-url: %q\n  candidate: false\n",
			primaryHostname, spec.Primary.URL)
	}

	// Write its config file, and open its log.
	configPath := filepath.Join(spec.Dir, "pagewire.yml")
	cfg := fmt.Sprintf("fuse:\n  dir: %q\ndata:\n  dir: %q\nhttp:\n  addr: %q\n%s%s", n.MountDir, n.DataDir, addr, lease, spec.Config)
	if err := os.WriteFile(configPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	if n.log, err = os.Create(n.LogPath); err != nil {
		return nil, err
	}

	// Run pagewire mount, with the app after -- if there is one.
	args := append([]string{"mount", "-config", configPath}, spec.Args...)
	if len(spec.Exec) > 0 {
		args = append(append(args, "--"), spec.Exec...)
	}
	n.cmd = exec.Command(bin, args...)
	n.cmd.Dir = spec.Dir
	if spec.Primary != nil {
		// Replicas on one machine need names of their own: the primary
		// tells them (and their acknowledgements) apart by hostname.
		n.cmd.Env = append(os.Environ(), "HOSTNAME=bench-"+filepath.Base(spec.Dir))
	}
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	n.cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: a Ctrl-C reaches the harness only, which
		// stops the node after the workloads. Pdeathsig: if the harness is
		// killed, the node still gets SIGTERM and unmounts.
		Setpgid:   true,
		Pdeathsig: syscall.SIGTERM,
	}
	if err := n.cmd.Start(); err != nil {
		n.log.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}

	// done closes when it exits.
	n.done = make(chan struct{})
	go func() {
		n.err = n.cmd.Wait()
		close(n.done)
	}()
	return n, nil
}

// waitReady polls /healthz every interval until it answers 200.
func (n *node) waitReady(ctx context.Context, interval time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, nodeReadyTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL+"/healthz", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-n.done:
			return fmt.Errorf("%s exited while starting: %v\n%s", n.Name, n.err, n.logTail())
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%s not ready after %s\n%s", n.Name, nodeReadyTimeout, n.logTail())
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// stop sends SIGTERM, waits for the process (SIGKILL after nodeStopTimeout)
// and makes sure no mount is left behind. Calls after the first do nothing.
func (n *node) stop() error {
	if n.stopped {
		return nil
	}
	n.stopped = true

	// SIGTERM, then SIGKILL after nodeStopTimeout; an early exit is an error too.
	var errs []error
	select {
	case <-n.done:
		errs = append(errs, fmt.Errorf("%s exited before the bench stopped it: %v", n.Name, n.err))
	default:
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.done:
			if n.err != nil {
				errs = append(errs, fmt.Errorf("%s exited after SIGTERM: %w", n.Name, n.err))
			}
		case <-time.After(nodeStopTimeout):
			_ = n.cmd.Process.Kill()
			<-n.done
			errs = append(errs, fmt.Errorf("%s did not stop within %s of SIGTERM; killed it", n.Name, nodeStopTimeout))
		}
	}

	// Close the log; a mount left behind is detached, and reported.
	n.log.Close()
	if mounted, err := isMounted(n.MountDir); err != nil {
		errs = append(errs, err)
	} else if mounted {
		if err := syscall.Unmount(n.MountDir, syscall.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", n.MountDir, err))
		} else {
			errs = append(errs, fmt.Errorf("%s left %s mounted; detached it", n.Name, n.MountDir))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w\n%s", errors.Join(errs...), n.logTail())
	}
	return nil
}

// logTail returns the last lines of the node's log, for error messages.
func (n *node) logTail() string {
	b, err := os.ReadFile(n.LogPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return n.Name + " log (" + n.LogPath + ", last lines):\n" + strings.Join(lines, "\n")
}

// isMounted reports whether dir is a mount point, from /proc/self/mountinfo.
func isMounted(dir string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for s.Scan() {
		// ID parent major:minor root mountpoint options ...
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && unescapeMountinfo(fields[4]) == dir {
			return true, nil
		}
	}
	return false, s.Err()
}

// stopNodes stops nodes in reverse order (replicas before their primary)
// and joins their errors. Nodes already stopped, and nil ones, are skipped.
func stopNodes(nodes ...*node) error {
	var errs []error
	for i := len(nodes) - 1; i >= 0; i-- {
		if nodes[i] != nil {
			errs = append(errs, nodes[i].stop())
		}
	}
	return errors.Join(errs...)
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
