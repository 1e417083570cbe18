//go:build integration

package e2e

import (
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pagewire/pagewire/config"
)

// TestMountConfig_Invalid checks that `pagewire mount -config F` with a bad
// config exits non-zero on its own, with a message naming the file, line and
// key, and that it mounted and created nothing.
func TestMountConfig_Invalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		// yaml is the config; @MNT@, @DATA@ and @ADDR@ are replaced with the
		// test's fuse.dir, data.dir and a free address.
		yaml string
		want []string // in the output; FILE is replaced with the config's path
	}{
		{
			name: "unknown key",
			yaml: "fuse:\n  dirr: /x\n",
			want: []string{`FILE:2:`, `unknown key "fuse.dirr"`, `did you mean "fuse.dir"`},
		},
		{
			name: "unknown key among good ones",
			yaml: "fuse:\n  dir: @MNT@\ndata:\n  dir: @DATA@\nhttp:\n  addr: @ADDR@\nlease:\n  type: static\n  canidate: true\n",
			want: []string{`FILE:9:`, `"lease.canidate"`, `"lease.candidate"`},
		},
		{
			name: "bad duration",
			yaml: "fuse:\n  dir: @MNT@\ndata:\n  dir: @DATA@\n  retention: 10 minutes\nhttp:\n  addr: @ADDR@\n",
			want: []string{`FILE:5:`, `data.retention`, `"10 minutes" is not a duration`},
		},
		{
			name: "bare number duration",
			yaml: "fuse:\n  dir: @MNT@\ndata:\n  dir: @DATA@\nhttp:\n  addr: @ADDR@\nproxy:\n  max-lag: 10\n",
			want: []string{`FILE:8:`, `proxy.max-lag`},
		},
		{
			name: "unsupported lease type",
			yaml: "fuse:\n  dir: @MNT@\ndata:\n  dir: @DATA@\nhttp:\n  addr: @ADDR@\nlease:\n  type: zookeeper\n",
			want: []string{`FILE:8:`, `lease.type "zookeeper"`, `"static"`, `"consul"`},
		},
		{
			name: "same fuse.dir and data.dir",
			yaml: "fuse:\n  dir: @MNT@\ndata:\n  dir: @MNT@\nhttp:\n  addr: @ADDR@\n",
			want: []string{`FILE:4:`, `data.dir`, `fuse.dir`, `same directory`},
		},
		{
			name: "data.dir inside fuse.dir",
			yaml: "fuse:\n  dir: @MNT@\ndata:\n  dir: @MNT@/data\nhttp:\n  addr: @ADDR@\n",
			want: []string{`FILE:4:`, `data.dir`, `inside fuse.dir`},
		},
		{
			name: "bad http.addr",
			yaml: "fuse:\n  dir: @MNT@\ndata:\n  dir: @DATA@\nhttp:\n  addr: \"localhost\"\n",
			want: []string{`FILE:6:`, `http.addr "localhost"`, `host:port`},
		},
		{
			name: "invalid YAML",
			yaml: "fuse:\n\tdir: @MNT@\n",
			want: []string{`FILE:2:`, `invalid YAML`},
		},
		{
			name: "key set twice",
			yaml: "fuse:\n  dir: @MNT@\ndata:\n  dir: @DATA@\nhttp:\n  addr: @ADDR@\nfuse:\n  debug: true\n",
			want: []string{`FILE:7:`, `fuse`, `twice`},
		},
		{
			name: "bad boolean",
			yaml: "fuse:\n  dir: @MNT@\n  allow-other: sometimes\ndata:\n  dir: @DATA@\nhttp:\n  addr: @ADDR@\n",
			want: []string{`FILE:3:`, `fuse.allow-other`, `"sometimes"`},
		},
		{
			name: "unclosed env reference",
			yaml: "fuse:\n  dir: @MNT@\ndata:\n  dir: ${DATA_DIR\nhttp:\n  addr: @ADDR@\n",
			want: []string{`FILE:4:`, `${DATA_DIR`, `"}"`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			mnt, data := filepath.Join(dir, "mnt"), filepath.Join(dir, "data")
			cfgPath := filepath.Join(dir, "litefs.yml")
			yaml := strings.NewReplacer("@MNT@", mnt, "@DATA@", data, "@ADDR@", freeAddr(t)).Replace(tc.yaml)
			if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
				_ = syscall.Unmount(filepath.Join(dir, "pagewire", "mnt"), syscall.MNT_DETACH)
			})
			out, code := cliRun(t, dir, nil, 2*time.Minute, "mount", "-config", cfgPath)
			if code == 0 {
				t.Fatalf("pagewire mount exited 0 with config:\n%s\noutput:\n%s", yaml, out)
			}
			for _, w := range tc.want {
				w = strings.ReplaceAll(w, "FILE", cfgPath)
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
				t.Errorf("output looks like a crash:\n%s", out)
			}
			cliAssertNothingCreated(t, dir, mnt, data)
		})
	}

	t.Run("missing config file", func(t *testing.T) {
		dir := t.TempDir()
		missing := filepath.Join(dir, "nosuch.yml")
		out, code := cliRun(t, dir, nil, 2*time.Minute, "mount", "-config", missing)
		if code == 0 {
			t.Fatalf("pagewire mount -config %s exited 0:\n%s", missing, out)
		}
		for _, w := range []string{missing, "does not exist", "-config"} {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q:\n%s", w, out)
			}
		}
		cliAssertNothingCreated(t, dir)
	})

	t.Run("config is a directory", func(t *testing.T) {
		dir := t.TempDir()
		out, code := cliRun(t, dir, nil, 2*time.Minute, "mount", "-config", dir)
		if code == 0 || !strings.Contains(out, "is a directory") {
			t.Fatalf("pagewire mount -config %s: exit %d, output:\n%s", dir, code, out)
		}
		cliAssertNothingCreated(t, dir)
	})
}

// cliAssertNothingCreated checks that no mount exists below dir, that the
// paths were not created, and that nothing but config files is in dir.
func cliAssertNothingCreated(t testing.TB, dir string, paths ...string) {
	t.Helper()
	if m := cliMounts(t, dir); len(m) > 0 {
		t.Errorf("mounts left below %s: %v", dir, m)
	}
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s was created", p)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".yml") {
			t.Errorf("%s was created in the working directory", filepath.Join(dir, e.Name()))
		}
	}
}

// TestMountConfig_EnvExpansion starts a node from a config that uses $VAR,
// ${VAR}, ${VAR:-default} and ${A == B}, and checks that the node runs at
// the expanded paths and with the expanded values.
func TestMountConfig_EnvExpansion(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "litefs.yml")
	addr := freeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	cfg := `# Environment expansion as LiteFS, plus ${VAR:-default}.
fuse:
  dir: $TEST_DIR/mnt
data:
  dir: "${TEST_DIR}/${PW_E2E_MISSING_SUBDIR:-fallback-data}"
http:
  addr: "${PW_E2E_HOST}:${PW_E2E_PORT}"
lease:
  type: static
  hostname: "${PW_E2E_MISSING_HOSTNAME:-fallback-host}"
  candidate: ${PW_E2E_REGION == PW_E2E_PRIMARY_REGION}
`
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	mnt, data := filepath.Join(dir, "mnt"), filepath.Join(dir, "fallback-data")
	env := cliEnv([]string{"PW_E2E_MISSING_SUBDIR", "PW_E2E_MISSING_HOSTNAME"},
		"TEST_DIR="+dir, "PW_E2E_HOST="+host, "PW_E2E_PORT="+port, "PW_E2E_REGION=iad", "PW_E2E_PRIMARY_REGION=iad")
	p := cliStart(t, dir, env, []string{mnt}, "mount", "-config", cfgPath)
	url := "http://" + addr
	p.waitHealthy(url, time.Minute)

	if !cliMounted(t, mnt) {
		t.Errorf("%s is not mounted; mounts below %s: %v", mnt, dir, cliMounts(t, dir))
	}
	if fi, err := os.Stat(data); err != nil || !fi.IsDir() {
		t.Errorf("data.dir %s was not created: %v", data, err)
	}
	// A database written at the expanded mount path is the node's.
	python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("create table t(v)")
c.execute("insert into t values (1)")
`, filepath.Join(mnt, "env.db"))
	out, code := cliRun(t, dir, nil, time.Minute, "status", "-url", url)
	if code != 0 {
		t.Fatalf("status exited %d:\n%s", code, out)
	}
	for _, w := range []string{"hostname: fallback-host", "role:     primary", "env.db"} {
		if !strings.Contains(out, w) {
			t.Errorf("status output lacks %q:\n%s", w, out)
		}
	}

	p.signal(syscall.SIGTERM)
	if code := p.wait(time.Minute); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if cliMounted(t, mnt) {
		t.Errorf("%s is still mounted after the node exited", mnt)
	}
}

// TestMountConfig_Lookup checks that `pagewire mount` without -config finds
// ./litefs.yml in its working directory, and prefers ./pagewire.yml.
func TestMountConfig_Lookup(t *testing.T) {
	nodeConfig := func(addr, hostname string) string {
		// Relative paths: resolved against the working directory.
		return fmt.Sprintf("fuse:\n  dir: ./mnt-%[2]s\ndata:\n  dir: ./data-%[2]s\nhttp:\n  addr: %[1]q\nlease:\n  type: static\n  hostname: %[2]s\n", addr, hostname)
	}
	t.Run("litefs.yml", func(t *testing.T) {
		dir := t.TempDir()
		addr := freeAddr(t)
		if err := os.WriteFile(filepath.Join(dir, "litefs.yml"), []byte(nodeConfig(addr, "from-litefs")), 0o644); err != nil {
			t.Fatal(err)
		}
		mnt := filepath.Join(dir, "mnt-from-litefs")
		p := cliStart(t, dir, nil, []string{mnt}, "mount")
		p.waitHealthy("http://"+addr, time.Minute)
		if !cliMounted(t, mnt) {
			t.Errorf("%s is not mounted; mounts below %s: %v", mnt, dir, cliMounts(t, dir))
		}
		if !strings.Contains(p.log.String(), "config=litefs.yml") {
			t.Errorf("log does not say config=litefs.yml:\n%s", p.log)
		}
		if _, err := os.Stat(filepath.Join(dir, "pagewire")); err == nil {
			t.Errorf("the embedded default's ./pagewire was created although ./litefs.yml exists")
		}
		p.signal(syscall.SIGTERM)
		if code := p.wait(time.Minute); code != 0 {
			t.Errorf("exit code %d after SIGTERM, want 0", code)
		}
	})
	t.Run("pagewire.yml first", func(t *testing.T) {
		dir := t.TempDir()
		addrP, addrL := freeAddr(t), freeAddr(t)
		if err := os.WriteFile(filepath.Join(dir, "pagewire.yml"), []byte(nodeConfig(addrP, "from-pagewire")), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "litefs.yml"), []byte(nodeConfig(addrL, "from-litefs")), 0o644); err != nil {
			t.Fatal(err)
		}
		mnt := filepath.Join(dir, "mnt-from-pagewire")
		p := cliStart(t, dir, nil, []string{mnt, filepath.Join(dir, "mnt-from-litefs")}, "mount")
		p.waitHealthy("http://"+addrP, time.Minute)
		out, code := cliRun(t, dir, nil, time.Minute, "status", "-url", "http://"+addrP)
		if code != 0 || !strings.Contains(out, "hostname: from-pagewire") {
			t.Errorf("status: exit %d, want hostname from-pagewire:\n%s", code, out)
		}
		if !cliMounted(t, mnt) {
			t.Errorf("%s is not mounted; mounts below %s: %v", mnt, dir, cliMounts(t, dir))
		}
		p.signal(syscall.SIGTERM)
		if code := p.wait(time.Minute); code != 0 {
			t.Errorf("exit code %d after SIGTERM, want 0", code)
		}
	})
}

// tcpListeners lists the addresses TCP sockets listen on at port, from
// /proc/net/tcp and /proc/net/tcp6.
func tcpListeners(t *testing.T, port string) []string {
	t.Helper()
	want := fmt.Sprintf(":%04X", mustAtoi(t, port))
	var out []string
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 4 || fields[3] != "0A" || !strings.HasSuffix(fields[1], want) { // 0A: LISTEN
				continue
			}
			out = append(out, hexAddr(strings.TrimSuffix(fields[1], want)))
		}
	}
	return out
}

// hexAddr turns /proc/net/tcp's little-endian hex address into an IP.
func hexAddr(h string) string {
	b, err := hex.DecodeString(h)
	if err != nil {
		return h
	}
	for i := 0; i+4 <= len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	return net.IP(b).String()
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestMountConfig_EmbeddedDefault runs `pagewire mount` with no config
// anywhere: it must mount ./pagewire/mnt, keep its data in ./pagewire/data,
// serve 127.0.0.1:20202 (loopback only), and stop cleanly on SIGTERM.
func TestMountConfig_EmbeddedDefault(t *testing.T) {
	for _, p := range []string{"/etc/pagewire.yml", "/etc/litefs.yml"} {
		if _, err := os.Stat(p); err == nil {
			t.Skipf("%s exists: pagewire mount would load it instead of the embedded default", p)
		}
	}
	const port = "20202"
	if l, err := net.Listen("tcp", ":"+port); err != nil {
		t.Skipf("port %s is in use (another node?): %v", port, err)
	} else {
		l.Close()
	}

	dir := t.TempDir()
	mnt, data := filepath.Join(dir, "pagewire", "mnt"), filepath.Join(dir, "pagewire", "data")
	p := cliStart(t, dir, nil, []string{mnt}, "mount")
	url := "http://127.0.0.1:" + port
	// Wait for /healthz on :20202, or for the process to fail.
	ok := pollUntil(time.Minute, func() bool {
		if !p.running() {
			return true
		}
		code, _, _, err := netGet(url + "/healthz")
		return err == nil && code == 200
	})
	if !p.running() {
		if strings.Contains(p.log.String(), "address already in use") {
			t.Skipf("port %s was taken by another process while the node started:\n%s", port, p.log)
		}
		t.Fatalf("pagewire mount with the embedded default exited: %v\n%s", p.err, p.log)
	}
	if !ok {
		t.Fatalf("%s/healthz did not answer 200:\n%s", url, p.log)
	}
	if !strings.Contains(p.log.String(), `config="embedded default"`) {
		t.Errorf("log does not say the embedded default is used:\n%s", p.log)
	}
	// Nothing protects the embedded default: it listens on loopback only.
	if listeners := tcpListeners(t, port); !slices.Equal(listeners, []string{"127.0.0.1"}) {
		t.Errorf("the embedded default listens on %v, want loopback only (127.0.0.1)", listeners)
	}
	if !cliMounted(t, mnt) {
		t.Errorf("%s is not mounted; mounts below %s: %v", mnt, dir, cliMounts(t, dir))
	}
	if fi, err := os.Stat(data); err != nil || !fi.IsDir() {
		t.Errorf("%s was not created: %v", data, err)
	}
	// status without -url talks to http://localhost:20202.
	out, code := cliRun(t, "", nil, time.Minute, "status")
	if code != 0 || !strings.Contains(out, "role:     primary") {
		t.Errorf("status (default -url): exit %d, output:\n%s", code, out)
	}

	p.signal(syscall.SIGTERM)
	if code := p.wait(time.Minute); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if cliMounted(t, mnt) {
		t.Errorf("%s is still mounted after SIGTERM", mnt)
	}
}

// flyEnv is a fake Fly.io machine environment.
func flyEnv(region string) map[string]string {
	return map[string]string{
		"FLY_REGION":     region,
		"PRIMARY_REGION": "iad",
		"FLY_APP_NAME":   "myapp",
		"FLY_CONSUL_URL": "https://:s3cr3t@consul-iad.fly-shared.net/myapp-abc123/",
		"HOSTNAME":       "e2865014a7d586",
		"FLY_MACHINE_ID": "e2865014a7d586",
		"FLY_ALLOC_ID":   "e2865014a7d586",
	}
}

// TestDeployConfigs_Valid loads every example config under deploy/ with a
// fake Fly environment, on a primary-region and a replica-region machine.
// Compose files (docker-compose*.yml, compose*.yml) are not pagewire
// configs and are left out.
func TestDeployConfigs_Valid(t *testing.T) {
	var files []string
	err := filepath.WalkDir("../deploy", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() || !(strings.HasSuffix(name, ".yml") || strings.HasSuffix(name, ".yaml")) {
			return nil
		}
		if regexp.MustCompile(`^(docker-)?compose\b`).MatchString(name) {
			return nil
		}
		files = append(files, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"../deploy/litefs.yml", "../deploy/fly/litefs.yml"} {
		found := false
		for _, f := range files {
			found = found || f == want
		}
		if !found {
			t.Errorf("%s is missing", want)
		}
	}

	for _, region := range []string{"iad", "ams"} {
		env := flyEnv(region)
		getenv := func(k string) string { return env[k] }
		for _, f := range files {
			t.Run(region+"/"+strings.TrimPrefix(f, "../"), func(t *testing.T) {
				c, err := config.Load(f, getenv)
				if err != nil {
					t.Fatalf("config.Load(%s): %v", f, err)
				}
				switch f {
				case "../deploy/litefs.yml":
					if c.Lease.Type != config.LeaseTypeStatic || !c.Lease.Candidate {
						t.Errorf("lease type %q candidate %v, want a static primary", c.Lease.Type, c.Lease.Candidate)
					}
				case "../deploy/fly/litefs.yml":
					if got, want := c.Lease.Type, config.LeaseTypeConsul; got != want {
						t.Errorf("lease.type=%q, want %q", got, want)
					}
					if got, want := c.Lease.Candidate, region == "iad"; got != want {
						t.Errorf("lease.candidate=%v in region %s, want %v", got, region, want)
					}
					if got, want := c.Lease.Consul.URL, env["FLY_CONSUL_URL"]; got != want {
						t.Errorf("lease.consul.url=%q, want %q", got, want)
					}
					if got, want := c.Lease.Hostname, "e2865014a7d586"; got != want {
						t.Errorf("lease.hostname=%q, want FLY_ALLOC_ID %q", got, want)
					}
					if got, want := c.Lease.Consul.Key, "myapp/primary"; got != want {
						t.Errorf("lease.consul.key=%q, want %q", got, want)
					}
					if got, want := c.HTTP.Addr, "[::]:20202"; got != want {
						t.Errorf("http.addr=%q, want %q (6PN is IPv6-only)", got, want)
					}
					if got, want := c.Lease.AdvertiseURL, "http://e2865014a7d586.vm.myapp.internal:20202"; got != want {
						t.Errorf("lease.advertise-url=%q, want %q", got, want)
					}
					if c.Proxy.Addr == "" || c.Proxy.Target == "" || c.Proxy.DB == "" {
						t.Errorf("proxy = %+v, want addr, target and db set", c.Proxy)
					}
				}
			})
		}
	}

	t.Run("fly without FLY_CONSUL_URL", func(t *testing.T) {
		env := flyEnv("iad")
		delete(env, "FLY_CONSUL_URL")
		_, err := config.Load("../deploy/fly/litefs.yml", func(k string) string { return env[k] })
		if err == nil || !strings.Contains(err.Error(), "lease.consul.url") {
			t.Fatalf("config.Load without FLY_CONSUL_URL: %v, want an error naming lease.consul.url", err)
		}
	})
}

// TestMountConfig_StartupErrors checks configs that parse but cannot run:
// each makes pagewire exit non-zero with a message naming the key, and
// leaves no mount behind.
func TestMountConfig_StartupErrors(t *testing.T) {
	t.Run("http.addr in use", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		dir := t.TempDir()
		mnt := filepath.Join(dir, "mnt")
		cfgPath := filepath.Join(dir, "pagewire.yml")
		cfg := fmt.Sprintf("fuse:\n  dir: %q\ndata:\n  dir: %q\nhttp:\n  addr: %q\n", mnt, filepath.Join(dir, "data"), l.Addr().String())
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })
		out, code := cliRun(t, dir, nil, 2*time.Minute, "mount", "-config", cfgPath)
		if code == 0 {
			t.Fatalf("pagewire mount exited 0 with http.addr in use:\n%s", out)
		}
		for _, w := range []string{fmt.Sprintf("http.addr %q", l.Addr().String()), "address already in use"} {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q:\n%s", w, out)
			}
		}
		if m := cliMounts(t, dir); len(m) > 0 {
			t.Errorf("mounts left below %s: %v", dir, m)
		}
	})

	t.Run("fuse.dir is a file", func(t *testing.T) {
		dir := t.TempDir()
		mnt := filepath.Join(dir, "not-a-dir")
		if err := os.WriteFile(mnt, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		cfgPath := filepath.Join(dir, "pagewire.yml")
		cfg := fmt.Sprintf("fuse:\n  dir: %q\ndata:\n  dir: %q\nhttp:\n  addr: %q\n", mnt, filepath.Join(dir, "data"), freeAddr(t))
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })
		out, code := cliRun(t, dir, nil, 2*time.Minute, "mount", "-config", cfgPath)
		if code == 0 {
			t.Fatalf("pagewire mount exited 0 with fuse.dir a regular file:\n%s", out)
		}
		for _, w := range []string{"fuse.dir", mnt} {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q:\n%s", w, out)
			}
		}
		if m := cliMounts(t, dir); len(m) > 0 {
			t.Errorf("mounts left below %s: %v", dir, m)
		}
	})
}
