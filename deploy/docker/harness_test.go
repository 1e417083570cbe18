//go:build docker

package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Images the tests build. The base images carry the names the Dockerfile
// uses, so that `docker build .` is the build a user runs; they are kept
// between runs (the first build takes minutes), as is the image under test,
// whose layers are the build cache of the next run.
const (
	debianImage  = "debian:bookworm-slim"
	golangImage  = "golang:1.26-bookworm"
	image        = "pagewire:test"
	exampleImage = "pagewire-example:test"
)

// modProxyAddr is where the build's Go module proxy listens when it can.
const modProxyAddr = "127.0.0.1:37491"

// prefix names this run's containers and volumes, so that cleanup removes
// only what this run made.
var prefix = fmt.Sprintf("pwtest%d-", os.Getpid())

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	start := time.Now()
	stop, err := startDockerd()
	if err != nil {
		fmt.Printf("docker tests skipped: dockerd cannot start here: %v\n", err)
		return 0
	}
	defer stop()
	if err := baseImages(); err != nil {
		fmt.Fprintf(os.Stderr, "docker tests: base images: %v\n", err)
		return 1
	}
	fmt.Printf("docker tests: dockerd and base images ready in %s\n", time.Since(start).Round(time.Second))
	built := time.Now()
	if err := buildImages(); err != nil {
		fmt.Fprintf(os.Stderr, "docker tests: docker build: %v\n", err)
		return 1
	}
	fmt.Printf("docker tests: docker build . in %s\n", time.Since(built).Round(time.Second))
	code := m.Run()
	cleanupAll()
	return code
}

// startDockerd starts dockerd unless one answers already, and returns how
// to stop what it started. dockerd gets no bridge and no iptables rules:
// containers run on the host network only.
func startDockerd() (stop func(), err error) {
	if docker("info") == nil {
		return func() {}, nil
	}
	bin, err := exec.LookPath("dockerd")
	if err != nil {
		return nil, errors.New("dockerd is not installed (apt-get install docker.io)")
	}
	logPath := filepath.Join(os.TempDir(), "pagewire-dockerd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--bridge=none", "--iptables=false", "--ip-masq=false", "--host=unix:///var/run/docker.sock")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for docker("info") != nil {
		select {
		case err := <-exited:
			return nil, fmt.Errorf("dockerd exited (%v): %s", err, lastLines(logPath, 3))
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("dockerd did not answer within 60s: %s", lastLines(logPath, 3))
		}
	}
	return stop, nil
}

// lastLines is the end of a log file, on one line.
func lastLines(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// baseImages makes the Dockerfile's base images unless they exist.
func baseImages() error {
	if docker("image", "inspect", debianImage) != nil {
		rootfs, err := debootstrap()
		if err != nil {
			return err
		}
		imp := exec.Command("sh", "-c", `tar -C "$1" -c . | docker import --change 'CMD ["bash"]' - "$2"`, "sh", rootfs, debianImage)
		if out, err := imp.CombinedOutput(); err != nil {
			return fmt.Errorf("docker import: %v: %s", err, out)
		}
	}
	if docker("image", "inspect", golangImage) == nil {
		return nil
	}
	// The Go image is the Debian one plus the host's toolchain, set up as
	// the official image is (GOPATH /go, GOTOOLCHAIN local).
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return fmt.Errorf("go env GOROOT: %w", err)
	}
	ctx, err := os.MkdirTemp("", "pagewire-golang-image")
	if err != nil {
		return err
	}
	defer os.RemoveAll(ctx)
	if out, err := exec.Command("cp", "-a", strings.TrimSpace(string(goroot)), filepath.Join(ctx, "go")).CombinedOutput(); err != nil {
		return fmt.Errorf("copy GOROOT: %v: %s", err, out)
	}
	dockerfile := "FROM " + debianImage + "\nCOPY go /usr/local/go\n" +
		"ENV GOPATH=/go GOTOOLCHAIN=local PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n" +
		"WORKDIR /go\n"
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return err
	}
	if out, err := dockerOutput("build", "-q", "-t", golangImage, ctx); err != nil {
		return fmt.Errorf("build %s: %v: %s", golangImage, err, out)
	}
	return nil
}

// debootstrap returns a minimal Debian bookworm tree, made once into
// ~/.cache/pagewire/docker.
func debootstrap() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(home, ".cache", "pagewire", "docker", "bookworm-rootfs")
	if _, err := os.Stat(filepath.Join(dir, "etc", "os-release")); err == nil {
		return dir, nil
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return "", errors.New("debootstrap is not installed (apt-get install debootstrap)")
	}
	tmp := dir + ".tmp"
	_ = os.RemoveAll(tmp)
	out, err := exec.Command("debootstrap", "--variant=minbase", "bookworm", tmp, "http://deb.debian.org/debian").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("debootstrap: %v: %s", err, lastOutput(out))
	}
	return dir, os.Rename(tmp, dir)
}

// buildImages builds the repository's Dockerfile, its default target and
// the example target, with Go modules served from the host's module cache
// (no module proxy is needed; go.sum still checks every module).
func buildImages() error {
	gomodcache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		return fmt.Errorf("go env GOMODCACHE: %w", err)
	}
	// GOPROXY is a build argument, so its value is part of Docker's cache
	// key: a fixed port keeps the cached build; a random one, if that
	// port is taken, only costs a full build.
	lis, err := net.Listen("tcp", modProxyAddr)
	if err != nil {
		if lis, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return err
		}
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(filepath.Join(strings.TrimSpace(string(gomodcache)), "cache", "download")))}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Close()

	root, err := filepath.Abs("../..")
	if err != nil {
		return err
	}
	args := []string{"build", "--network", "host", "--build-arg", "GOPROXY=http://" + lis.Addr().String(), "--build-arg", "GOSUMDB=off"}
	for _, b := range [][]string{{"-t", image, root}, {"--target", "example", "-t", exampleImage, root}} {
		if out, err := dockerOutput(append(args, b...)...); err != nil {
			return fmt.Errorf("%v: %s", err, lastOutput(out))
		}
	}
	// No image prune: the build stage's layers are untagged, and they are
	// the cache that makes the next build fast.
	return nil
}

// lastOutput is the end of a command's output.
func lastOutput(out []byte) string {
	const max = 3000
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return string(out)
}

// docker runs docker and returns only whether it failed.
func docker(args ...string) error {
	_, err := dockerOutput(args...)
	return err
}

// dockerOutput runs docker with a generous deadline and returns its
// combined output.
func dockerOutput(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

// cleanupAll removes whatever this run's tests left behind: containers and
// volumes named with prefix.
func cleanupAll() {
	if out, err := dockerOutput("ps", "-aq", "--filter", "name="+prefix); err == nil && len(bytes.TrimSpace(out)) > 0 {
		_, _ = dockerOutput(append([]string{"rm", "-f"}, strings.Fields(string(out))...)...)
	}
	if out, err := dockerOutput("volume", "ls", "-q", "--filter", "name="+prefix); err == nil && len(bytes.TrimSpace(out)) > 0 {
		_, _ = dockerOutput(append([]string{"volume", "rm", "-f"}, strings.Fields(string(out))...)...)
	}
}
