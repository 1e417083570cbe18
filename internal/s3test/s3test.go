package s3test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Version is the SeaweedFS that deploy/seaweedfs builds: its release number
// (what `weed version` prints) and the commit of the module version
// deploy/seaweedfs/go.mod requires. The Makefile's WEED_VERSION is the same;
// a unit test checks both.
const Version = "4.53-7506e5f91cd6"

// readyTimeout bounds how long Start and Restart wait for the server to
// take a write. It starts in about 5 s.
const readyTimeout = 60 * time.Second

// DefaultPath is where `make seaweedfs` puts the weed binary.
func DefaultPath() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "pagewire", "weed-"+Version, "weed")
}

// Binary returns the weed binary's path, or an error that says how to
// build it.
func Binary() (string, error) {
	path := os.Getenv("WEED_BIN")
	if path == "" {
		path = DefaultPath()
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("no weed binary at %s: run `make seaweedfs` (builds deploy/seaweedfs once) or set WEED_BIN: %w", path, err)
	}
	return path, nil
}

// Server is a running S3 server with one bucket and one access key that may
// do anything. Its methods may be called from any goroutine.
type Server struct {
	Endpoint  string // http://127.0.0.1:port; path-style: http://127.0.0.1:port/bucket/key
	Region    string // us-east-1: any region signs, as long as client and server agree
	Bucket    string // created by Start
	AccessKey string
	SecretKey string // random for each server

	dir     string   // data, config and weed.log; removed when the test ends
	args    []string // the weed command line
	sockets []string // the Unix sockets weed makes in /tmp and leaves there when killed

	mu   sync.Mutex // guards proc, runs
	proc *process   // nil while stopped
	runs int        // how many times weed was started
}

// process is one run of weed.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once it has exited and been reaped
}

// Start runs an S3 server on free loopback ports with its data in a
// temporary folder, creates Bucket, waits until it takes a write, and stops
// the server when the test ends, whether it passes or not.
func Start(t testing.TB) *Server {
	t.Helper()
	started := time.Now()
	s, err := StartIn(t.TempDir()) // removed after Stop: cleanups run last first
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	t.Logf("s3test: weed S3 server at %s ready in %v", s.Endpoint, time.Since(started).Round(time.Millisecond))
	return s
}

// StartIn is Start outside a test (the bench runs it): the server's data,
// config and log go in dir, an empty folder that is the caller's to
// remove, and the caller must call Stop. On error nothing is left running.
func StartIn(dir string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 20)
	_, _ = rand.Read(secret) // crypto/rand.Read never fails
	s := &Server{
		Region:    "us-east-1",
		Bucket:    "pagewire-test",
		AccessKey: "PAGEWIRETEST",
		SecretKey: hex.EncodeToString(secret),
		dir:       dir,
	}
	for _, sub := range []string{"data", "tmp"} {
		if err := os.Mkdir(filepath.Join(s.dir, sub), 0o700); err != nil {
			return nil, err
		}
	}

	// One identity with every right: anonymous and wrongly signed requests
	// are refused.
	config, err := json.Marshal(map[string]any{"identities": []any{map[string]any{
		"name":        "pagewire-test",
		"credentials": []any{map[string]string{"accessKey": s.AccessKey, "secretKey": s.SecretKey}},
		"actions":     []string{"Admin", "Read", "List", "Tagging", "Write"},
	}}})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(s.dir, "s3.json"), config, 0o600); err != nil {
		return nil, err
	}

	// weed mini, SeaweedFS's all-in-one for development: master, volume
	// server, filer, S3 gateway and admin server (with its maintenance
	// worker) in one process, each on an HTTP and a gRPC port given here
	// (by default weed puts gRPC at HTTP+10000, past 65535 for high
	// ports), bound to loopback only. No WebDAV, admin UI, Iceberg, Lance or
	// IAM API; no telemetry; no bucket made by a write (as S3 does); small
	// volumes, so that a test's data does not need a GiB volume file.
	p, err := freePorts(10)
	if err != nil {
		return nil, err
	}
	s.Endpoint = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(p[6]))
	s.args = []string{bin, "-logtostderr", "mini",
		"-dir", filepath.Join(s.dir, "data"), "-ip", "127.0.0.1", "-ip.bind", "127.0.0.1",
		"-master.port", strconv.Itoa(p[0]), "-master.port.grpc", strconv.Itoa(p[1]),
		"-volume.port", strconv.Itoa(p[2]), "-volume.port.grpc", strconv.Itoa(p[3]),
		"-filer.port", strconv.Itoa(p[4]), "-filer.port.grpc", strconv.Itoa(p[5]),
		"-s3.port", strconv.Itoa(p[6]), "-s3.port.grpc", strconv.Itoa(p[7]),
		"-admin.port", strconv.Itoa(p[8]), "-admin.port.grpc", strconv.Itoa(p[9]), "-admin.port.legacy", "0",
		"-webdav=false", "-admin.ui=false", "-s3.port.iceberg", "0", "-s3.port.lance", "0", "-s3.iam=false",
		"-s3.config", filepath.Join(s.dir, "s3.json"), "-s3.autoCreateBucket=false",
		"-master.telemetry=false", "-master.volumeSizeLimitMB", "64", "-volume.max", "100",
	}

	// weed makes these in /tmp, whatever TMPDIR says; Stop removes them.
	for _, sock := range []struct {
		name string
		port int
	}{
		{"master-grpc", p[1]}, {"volume-grpc", p[3]}, {"filer-grpc", p[5]}, {"s3-grpc", p[7]},
		{"admin-grpc", p[9]}, {"filer", p[4]}, {"s3", p[6]},
	} {
		s.sockets = append(s.sockets, fmt.Sprintf("/tmp/seaweedfs-%s-%d.sock", sock.name, sock.port))
	}

	if err := s.start(); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// Stop kills the server (SIGKILL to its process group: a crash, with no
// chance to tidy up) and waits for it to exit. Requests then fail: the
// connection is refused. Its data stays for Restart until the test ends.
// Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}

	select {
	case <-p.done: // it exited by itself, and its group with it
	default:
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	for _, sock := range s.sockets {
		_ = os.Remove(sock)
	}
}

// Restart stops the server if it runs, starts it again on the same ports
// and data, and waits until it takes a write. What was written before is
// there again.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	started := time.Now()
	s.Stop()
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("s3test: weed S3 server at %s ready again in %v", s.Endpoint, time.Since(started).Round(time.Millisecond))
}

// Env is the server's credentials and region as environment entries, for a
// child process's exec.Cmd.Env (appended to os.Environ()) or t.Setenv. It
// also turns off the AWS SDKs' EC2 metadata lookups, which have nothing to
// reach here. Path-style addressing and the endpoint are not in it: the
// SDKs read them from their own config (see BucketURL).
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=" + s.Region,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// BucketURL is Bucket's URL for gocloud.dev/blob's s3blob: plain HTTP to
// Endpoint with path-style addressing. s3blob takes the credentials from
// the environment (Env).
func (s *Server) BucketURL() string {
	q := url.Values{
		"endpoint":       {s.Endpoint},
		"region":         {s.Region},
		"use_path_style": {"true"},
		"disable_https":  {"true"},
	}
	return "s3://" + s.Bucket + "?" + q.Encode()
}

// Log is what weed printed, over all its runs.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "weed.log"))
	return string(b)
}

// start runs weed and waits until Bucket exists and takes a write. On
// error weed may still run: the caller stops it.
func (s *Server) start() error {
	started := time.Now()
	log, err := os.OpenFile(filepath.Join(s.dir, "weed.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close() // the child has its own copy
	s.mu.Lock()
	s.runs++
	fmt.Fprintf(log, "=== s3test: run %d of weed, at %s\n", s.runs, started.Format(time.RFC3339Nano))
	s.mu.Unlock()

	// Its own process group, to be killed as one; killed too if the test
	// binary dies. It reads no WEED_ or AWS_ settings of ours, and no
	// config file but those in its folder (its working directory and HOME,
	// so not ~/.seaweedfs).
	cmd := exec.Command(s.args[0], s.args[1:]...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "WEED_") && !strings.HasPrefix(name, "AWS_") && name != "HOME" && name != "TMPDIR" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "HOME="+s.dir, "TMPDIR="+filepath.Join(s.dir, "tmp"))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.args[0], err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()

	// Poll until the bucket is there and an object can be written and
	// deleted: the S3 port opens before the filer and volume server are
	// ready to store anything.
	deadline := time.Now().Add(readyTimeout)
	for {
		err := s.probe()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("weed S3 server not ready after %v: %w\nlast lines of its log:\n%s", readyTimeout, err, s.logTail(60))
		}
		select {
		case <-p.done:
			return fmt.Errorf("weed exited while starting (%v)\nlast lines of its log:\n%s", cmd.ProcessState, s.logTail(60))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// probe creates Bucket unless it exists, then writes and deletes an object
// in it.
func (s *Server) probe() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, body, err := s.do(ctx, http.MethodPut, "/"+s.Bucket)
	if err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	if code != http.StatusOK && !(code == http.StatusConflict && strings.Contains(body, "BucketAlreadyOwnedByYou")) {
		return fmt.Errorf("create bucket: %d %s", code, body)
	}
	const key = "s3test-ready"
	if code, body, err = s.do(ctx, http.MethodPut, "/"+s.Bucket+"/"+key); err != nil || code != http.StatusOK {
		return fmt.Errorf("put object: %d %s %v", code, body, err)
	}
	if code, body, err = s.do(ctx, http.MethodDelete, "/"+s.Bucket+"/"+key); err != nil || code != http.StatusNoContent {
		return fmt.Errorf("delete object: %d %s %v", code, body, err)
	}
	return nil
}

// do sends an S3 request with an empty body and no query, signed with AWS
// Signature Version 4, and returns the status and the start of the body.
func (s *Server) do(ctx context.Context, method, path string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.Endpoint+path, nil)
	if err != nil {
		return 0, "", err
	}
	s.sign(req, time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(body), nil
}

// sign adds SigV4 headers to a request with an empty body and no query
// (docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html).
func (s *Server) sign(req *http.Request, now time.Time) {
	const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	const signed = "host;x-amz-content-sha256;x-amz-date"
	date := now.UTC().Format("20060102T150405Z")
	scope := date[:8] + "/" + s.Region + "/s3/aws4_request"
	req.Header.Set("X-Amz-Date", date)
	req.Header.Set("X-Amz-Content-Sha256", emptySHA256)

	canonical := strings.Join([]string{req.Method, req.URL.EscapedPath(), "",
		"host:" + req.URL.Host, "x-amz-content-sha256:" + emptySHA256, "x-amz-date:" + date, "",
		signed, emptySHA256}, "\n")
	digest := sha256.Sum256([]byte(canonical))
	toSign := "AWS4-HMAC-SHA256\n" + date + "\n" + scope + "\n" + hex.EncodeToString(digest[:])

	key := []byte("AWS4" + s.SecretKey)
	for _, part := range []string{date[:8], s.Region, "s3", "aws4_request"} {
		key = hmacSHA256(key, part)
	}
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+s.AccessKey+"/"+scope+
		", SignedHeaders="+signed+", Signature="+hex.EncodeToString(hmacSHA256(key, toSign)))
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

// logTail is the last n lines of weed's log.
func (s *Server) logTail(n int) string {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader([]byte(s.Log())))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// freePorts returns n distinct TCP ports free on loopback, drawn below the
// kernel's ephemeral range: weed binds its ports one after another over
// seconds, and a port from that range (as port 0 gives) could meanwhile
// become the source port of one of weed's own connections, or of anyone's
// before a Restart binds it again.
func freePorts(n int) ([]int, error) {
	const low = 10000
	high := ephemeralFloor()
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for try := 0; len(ports) < n; try++ {
		if try == 1000 {
			return nil, fmt.Errorf("no %d free loopback ports in [%d, %d)", n, low, high)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(low+mrand.IntN(high-low))))
		if err != nil {
			continue // taken, or drawn twice: its listener is still open
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// ephemeralFloor is the first port of the kernel's ephemeral range, or
// Linux's default if it cannot be read or leaves too little room below.
func ephemeralFloor() int {
	const linuxDefault = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return linuxDefault
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return linuxDefault
	}
	floor, err := strconv.Atoi(fields[0])
	if err != nil || floor < 20000 {
		return linuxDefault
	}
	return floor
}
