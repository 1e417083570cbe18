//go:build docker

package docker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// consulImage is deploy/consul's agent on the Debian base: the stand-in
// for hashicorp/consul, which no registry serves here. Kept between runs.
const consulImage = "pagewire-consul:1.14.11"

// deploy/compose as a user runs it, with Compose v1 (Debian's
// docker-compose): three nodes with a Consul lease, each with the example
// app behind its proxy. A write through one proxy is read through the
// others; the primary killed, another takes over and takes writes; it
// restarts as a replica and catches up.
func TestCompose_Failover(t *testing.T) {
	compose, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Skip("docker-compose is not installed (apt-get install docker-compose)")
	}
	consulImageReady(t)

	// Ports: every one the compose file takes from the environment.
	env := map[string]string{"PAGEWIRE_IMAGE": exampleImage, "CONSUL_IMAGE": consulImage}
	for _, v := range []string{"CONSUL_HTTP_PORT", "CONSUL_SERF_LAN_PORT", "CONSUL_SERF_WAN_PORT", "CONSUL_SERVER_PORT"} {
		env[v] = strconv.Itoa(freePort(t))
	}
	nodes := []string{"node1", "node2", "node3"}
	api, proxy := map[string]string{}, map[string]string{}
	for _, n := range nodes {
		up := strings.ToUpper(n)
		for _, p := range []string{"HTTP", "PROXY", "APP"} {
			env[up+"_"+p+"_PORT"] = strconv.Itoa(freePort(t))
		}
		api[n] = "http://127.0.0.1:" + env[up+"_HTTP_PORT"]
		proxy[n] = "http://127.0.0.1:" + env[up+"_PROXY_PORT"]
	}
	project := strings.TrimSuffix(prefix, "-") + "compose"
	run := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, compose, append([]string{"-f", "../compose/docker-compose.yml", "-p", project}, args...)...)
		cmd.Env = os.Environ()
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("docker-compose %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range append([]string{"consul"}, nodes...) {
				out, _ := dockerOutput("logs", "--tail", "30", project+"_"+n+"_1")
				t.Logf("%s's last log lines:\n%s", n, out)
			}
		}
		run("down", "-v", "-t", "5")
	})
	run("up", "-d", "--no-build")

	// Every node is up and names one primary.
	primary := func(n string) string { return strings.TrimSpace(get(api[n] + "/primary")) }
	var p string
	waitFor(t, 90*time.Second, "the nodes to agree on a primary", func() bool {
		p = primary("node1")
		return p != "" && p == primary("node2") && p == primary("node3") && healthy(proxy["node1"]) && healthy(proxy["node2"]) && healthy(proxy["node3"])
	})
	others := []string{}
	for _, n := range nodes {
		if n != p {
			others = append(others, n)
		}
	}

	// A write through a replica's proxy reaches the primary; every node
	// serves it.
	postItem(t, proxy[others[0]], "a")
	for _, n := range nodes {
		waitItems(t, proxy[n], `"a"`)
	}

	// Kill the primary: another takes the lease and takes writes.
	run("kill", p)
	var next string
	waitFor(t, 60*time.Second, "a new primary", func() bool {
		next = primary(others[0])
		return next != "" && next != p && next == primary(others[1])
	})
	t.Logf("%s killed; %s took over", p, next)
	postItem(t, proxy[others[1]], "b")

	// The old primary comes back as a replica with both writes.
	run("start", p)
	waitFor(t, 60*time.Second, p+" to follow "+next, func() bool { return primary(p) == next })
	waitItems(t, proxy[p], `"b"`)
}

// consulImageReady builds consulImage from the Consul agent that `make
// consul` builds, unless it exists; it skips the test without the agent.
func consulImageReady(t *testing.T) {
	t.Helper()
	if docker("image", "inspect", consulImage) == nil {
		return
	}
	bin := os.Getenv("CONSUL_BIN")
	if bin == "" {
		home, _ := os.UserHomeDir()
		bin = filepath.Join(home, ".cache", "pagewire", "consul-1.14.11")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no Consul agent at %s: run `make consul`", bin)
	}
	dir := t.TempDir()
	if out, err := exec.Command("cp", bin, filepath.Join(dir, "consul")).CombinedOutput(); err != nil {
		t.Fatalf("copy the Consul agent: %v: %s", err, out)
	}
	df := "FROM " + debianImage + "\nCOPY consul /bin/consul\nENTRYPOINT [\"consul\"]\nCMD [\"agent\", \"-dev\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := dockerOutput("build", "-q", "-t", consulImage, dir); err != nil {
		t.Fatalf("build %s: %v: %s", consulImage, err, out)
	}
}

// get returns url's body, or "" on any error.
func get(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return string(b)
}

// healthy reports whether the app behind proxy answers /healthz.
func healthy(proxy string) bool { return get(proxy+"/healthz") != "" }

// postItem creates an item named name through a proxy.
func postItem(t *testing.T, proxy, name string) {
	t.Helper()
	body := fmt.Sprintf(`{"name": %q, "value": "v"}`, name)
	var status int
	var out []byte
	ok := poll(30*time.Second, func() bool {
		resp, err := http.Post(proxy+"/items", "application/json", bytes.NewBufferString(body))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		status = resp.StatusCode
		out, _ = io.ReadAll(resp.Body)
		return status == http.StatusCreated
	})
	if !ok {
		t.Fatalf("POST %s/items: %d %s", proxy, status, out)
	}
}

// waitItems waits until proxy's item list contains want.
func waitItems(t *testing.T, proxy, want string) {
	t.Helper()
	var got string
	if !poll(30*time.Second, func() bool { got = get(proxy + "/items"); return strings.Contains(got, want) }) {
		t.Fatalf("GET %s/items = %q, want it to contain %s", proxy, got, want)
	}
}
