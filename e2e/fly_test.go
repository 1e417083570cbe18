//go:build integration

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/consultest"
)

// TestFly runs deploy/fly/litefs.yml unchanged as Fly.io would: three
// machines on an IPv6-only network (fdaa:: addresses, as 6PN), each naming
// the others <alloc>.vm.<app>.internal through its own /etc/hosts, a Consul
// agent at FLY_CONSUL_URL, and Fly's variables. Two machines are in
// PRIMARY_REGION, one elsewhere.
//
// Each node runs under `ip netns exec`, which gives it the host's network
// namespace and a mount namespace of its own in which
// /etc/netns/<ns>/hosts is bound over /etc/hosts; there the node's own
// folders are bound over the file's /litefs and /var/lib/pagewire. The test
// reaches a node's mount through /proc/<pid>/root.
func TestFly(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute long")
	}
	if why := labAvailable(); why != "" {
		t.Skip(why)
	}
	cfgPath, err := filepath.Abs("../deploy/fly/litefs.yml")
	if err != nil {
		t.Fatal(err)
	}
	const app = "pwfly"
	lab := newNetLab(t)
	consul := lab.AddHost("consul", "10")
	agent := consultest.StartWith(t, consultest.Options{Prefix: consul.Exec(), Addr: consul.Addr})
	if !strings.HasPrefix(agent.URL, "http://[fdaa:") {
		t.Fatalf("Consul's URL %q is not a bracketed fdaa:: address", agent.URL)
	}

	// The machines: two candidates in iad, a replica in ams.
	f := &flyCluster{t: t, app: app}
	for i, region := range []string{"iad", "iad", "ams"} {
		name := fmt.Sprintf("node%d", i+1)
		f.machines = append(f.machines, &flyMachine{
			host:   lab.AddHost(name, fmt.Sprint(i+2)),
			alloc:  fmt.Sprintf("%014x", 0x9080e1eb0f9580+i),
			region: region,
		})
	}
	f.prepare()
	for _, m := range f.machines {
		m.Node = StartNode(t, NodeOptions{
			ConfigFile: cfgPath,
			Exec:       f.exec(m, agent.URL),
			URL:        m.host.URL(20202),
		})
	}
	nonCandidate := f.machines[2]

	// The names resolve through each namespace's hosts file, and only
	// there: the test's own resolver does not know them.
	for _, m := range f.machines {
		if addrs, err := net.DefaultResolver.LookupHost(context.Background(), m.name(app)); err == nil {
			t.Fatalf("%s resolves outside the lab (%v): the test would not prove that nodes use their hosts file", m.name(app), addrs)
		}
		if got := f.resolve(nonCandidate, m.name(app)); got != m.host.Addr {
			t.Fatalf("%s resolves to %q in %s, want %s", m.name(app), got, nonCandidate.host.NS, m.host.Addr)
		}
	}

	// One primary, a candidate; every node names it.
	primary := f.onePrimary(90*time.Second, f.machines[:2])
	t.Logf("primary: %s (%s)", primary.alloc, primary.host.Name)

	t.Run("IPv6 listener", func(t *testing.T) {
		for _, m := range f.machines {
			if !procListens(t, m, "tcp6", "00000000000000000000000000000000", 20202) {
				t.Errorf("%s: no listener on [::]:20202 in /proc/%d/net/tcp6", m.host.Name, m.pid())
			}
			if procListens(t, m, "tcp", "00000000", 20202) {
				t.Errorf("%s: an IPv4 socket listens on 20202, want the one [::] socket", m.host.Name)
			}
		}
	})

	t.Run("exec waits for a primary", func(t *testing.T) {
		// A node that did not know the primary when its mount was ready
		// says so, and runs exec only once it does.
		for _, m := range f.machines {
			log := m.Log.String()
			app := strings.Index(log, `"msg":"started app"`)
			waiting := strings.Index(log, `"msg":"waiting to be the primary or to know it before running exec"`)
			known := strings.Index(log, `"msg":"connected to the cluster; running exec"`)
			if app < 0 || (waiting >= 0 && (known < waiting || app < known)) {
				t.Errorf("%s: started its exec at %d, waited for a primary at %d, knew it at %d", m.host.Name, app, waiting, known)
			}
			t.Logf("%s: waited for a primary before exec: %v", m.host.Name, waiting >= 0)
		}
	})

	t.Run("replicas follow by name", func(t *testing.T) {
		url := fmt.Sprintf("http://%s:20202", primary.name(app))
		for _, m := range f.others(primary) {
			waitFor(t, 30*time.Second, m.host.Name+" to log following "+url, func() bool {
				return strings.Contains(m.Log.String(), url)
			})
			if got, want := m.readPrimaryFile(t), primary.alloc+"\n"; got != want {
				t.Errorf("%s: .primary = %q, want %q", m.host.Name, got, want)
			}
		}
		if _, err := os.Stat(primary.mountPath(".primary")); !os.IsNotExist(err) {
			t.Errorf("the primary has a .primary file: %v", err)
		}
	})

	var firstID int64
	t.Run("replication", func(t *testing.T) {
		id, cookie := f.postItem(primary.host, "written on the primary")
		firstID = id
		for _, m := range f.others(primary) {
			f.checkItem(m, id, cookie, "written on the primary")
		}
	})

	t.Run("fly-replay", func(t *testing.T) {
		// A write on the non-candidate's proxy is answered with
		// fly-replay naming the primary's machine; Fly's proxy then
		// replays it on that machine, found by its 6PN name.
		code, body, h := flyPost(t, nonCandidate.host, "replayed")
		if code != http.StatusOK || h.Get("fly-replay") != "instance="+primary.alloc {
			t.Fatalf("POST on %s's proxy: %d fly-replay %q, want 200 instance=%s: %s", nonCandidate.host.Name, code, h.Get("fly-replay"), primary.alloc, body)
		}
		target := strings.TrimPrefix(h.Get("fly-replay"), "instance=")
		addr := f.resolve(nonCandidate, target+".vm."+app+".internal")
		replayed := f.machineAt(addr)
		if replayed != primary {
			t.Fatalf("fly-replay %s resolves to %s, not the primary's %s", target, addr, primary.host.Addr)
		}
		id, cookie := f.postItem(replayed.host, "replayed")
		for _, m := range f.others(primary) {
			f.checkItem(m, id, cookie, "replayed")
		}
	})

	t.Run("failover to the other candidate", func(t *testing.T) {
		other := f.machines[0]
		if other == primary {
			other = f.machines[1]
		}
		primary.Kill()
		next := f.onePrimary(90*time.Second, []*flyMachine{other, nonCandidate})
		if next != other {
			t.Fatalf("after kill -9 of %s, %s became primary, want %s", primary.host.Name, next.host.Name, other.host.Name)
		}
		// A write on the new primary, on a connection opened now: the
		// example app's pooled connections may have been opened while
		// this node was a replica, and SQLite keeps such a connection
		// read-only (it reopened the file O_RDONLY when the replica
		// refused O_RDWR), so the app itself may not write until it
		// reconnects.
		out, err := exec.Command("nsenter", fmt.Sprintf("--mount=/proc/%d/ns/mnt", next.pid()), "sqlite3", "/litefs/db",
			"INSERT INTO items (name, value, created_at) VALUES ('after failover', 'v', 'now'); SELECT last_insert_rowid();").CombinedOutput()
		var id int64
		if _, serr := fmt.Sscan(string(out), &id); err != nil || serr != nil {
			t.Fatalf("sqlite3 insert on the new primary %s: %v %v: %s", next.host.Name, err, serr, out)
		}
		f.checkItem(nonCandidate, id, "", "after failover")
		if got, want := nonCandidate.readPrimaryFile(t), next.alloc+"\n"; got != want {
			t.Errorf("%s: .primary = %q after the failover, want %q", nonCandidate.host.Name, got, want)
		}
		// What the first primary wrote is on the new one.
		f.checkItem(next, firstID, "", "written on the primary")
	})
}

// flyCluster is TestFly's machines.
type flyCluster struct {
	t        *testing.T
	app      string
	machines []*flyMachine
	shims    string // a folder with the config's `myapp` in it
}

// flyMachine is one Fly machine: a lab host and its node.
type flyMachine struct {
	*Node
	host   *netHost
	alloc  string // FLY_ALLOC_ID
	region string // FLY_REGION
}

// name is the machine's 6PN name.
func (m *flyMachine) name(app string) string { return m.alloc + ".vm." + app + ".internal" }

// pid is the node's process, which `ip netns exec` and sh exec into.
func (m *flyMachine) pid() int { return m.cmd.Process.Pid }

// mountPath is a file on the node's mount, seen through its mount
// namespace.
func (m *flyMachine) mountPath(name string) string {
	return fmt.Sprintf("/proc/%d/root/litefs/%s", m.pid(), name)
}

func (m *flyMachine) readPrimaryFile(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(m.mountPath(".primary"))
	if err != nil {
		t.Fatalf("%s: %v", m.host.Name, err)
	}
	return string(b)
}

// prepare writes each namespace's hosts file, the `myapp` the config's
// exec runs, and makes the config's folders exist as mount points.
func (f *flyCluster) prepare() {
	t := f.t
	var hosts strings.Builder
	hosts.WriteString("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
	for _, m := range f.machines {
		fmt.Fprintf(&hosts, "%s %s\n", m.host.Addr, m.name(f.app))
	}
	if _, err := os.Stat("/etc/netns"); err != nil {
		t.Cleanup(func() { _ = os.Remove("/etc/netns") }) // after the files in it
	}
	for _, m := range f.machines {
		dir := filepath.Join("/etc/netns", m.host.NS)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(hosts.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The config's exec: `myapp serve` is the example app, and `myapp
	// migrate` makes its table, retrying while this candidate is not the
	// primary (pagewire starts exec once a primary is known, which may be
	// the other candidate).
	f.shims = t.TempDir()
	shim := fmt.Sprintf(flyShim, exampleBin)
	if err := os.WriteFile(filepath.Join(f.shims, "myapp"), []byte(shim), 0o755); err != nil {
		t.Fatal(err)
	}

	// Empty folders to bind the nodes' own over; removed after if made here.
	for _, dir := range []string{"/litefs", "/var/lib/pagewire"} {
		if _, err := os.Stat(dir); err == nil {
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Remove(dir) })
	}
}

// exec is the prefix that runs m's node: in its network namespace with
// its hosts file (ip netns exec), its folders bound over the config's, and
// Fly's environment.
func (f *flyCluster) exec(m *flyMachine, consulURL string) []string {
	own := f.t.TempDir()
	for _, d := range []string{"litefs", "data"} {
		if err := os.Mkdir(filepath.Join(own, d), 0o755); err != nil {
			f.t.Fatal(err)
		}
	}
	script := `set -e; mount --bind "$1/litefs" /litefs; mount --bind "$1/data" /var/lib/pagewire; shift; exec "$@"`
	return []string{"ip", "netns", "exec", m.host.NS, "sh", "-c", script, "sh", own,
		"env", "PATH=" + f.shims + ":" + os.Getenv("PATH"),
		"FLY_ALLOC_ID=" + m.alloc, "FLY_MACHINE_ID=" + m.alloc, "HOSTNAME=" + m.alloc,
		"FLY_APP_NAME=" + f.app, "FLY_REGION=" + m.region, "PRIMARY_REGION=iad",
		"FLY_CONSUL_URL=" + consulURL + "/"}
}

// resolve looks name up in m's namespace, as its node does.
func (f *flyCluster) resolve(m *flyMachine, name string) string {
	f.t.Helper()
	out, err := exec.Command("ip", "netns", "exec", m.host.NS, "getent", "hosts", name).CombinedOutput()
	if err != nil {
		f.t.Fatalf("getent hosts %s in %s: %v: %s", name, m.host.NS, err, out)
	}
	return strings.Fields(string(out))[0]
}

func (f *flyCluster) machineAt(addr string) *flyMachine {
	for _, m := range f.machines {
		if m.host.Addr == addr {
			return m
		}
	}
	return nil
}

func (f *flyCluster) others(m *flyMachine) []*flyMachine {
	return slices.DeleteFunc(slices.Clone(f.machines), func(o *flyMachine) bool { return o == m })
}

// onePrimary waits until exactly one running node is primary, and every
// running node's GET /primary names it; it must be among want. The
// non-candidate must never be primary.
func (f *flyCluster) onePrimary(timeout time.Duration, want []*flyMachine) *flyMachine {
	f.t.Helper()
	var found, stable *flyMachine
	var since time.Time
	var last string
	ok := pollUntil(timeout, func() bool {
		found, last = f.agreedPrimary()
		if found == nil {
			stable = nil
			return false
		}
		// lease.promote moves the lease once per candidate at the start:
		// wait for it to stay put for 3 s.
		if found != stable {
			stable, since = found, time.Now()
		}
		return time.Since(since) >= 3*time.Second
	})
	if !ok {
		f.t.Fatalf("no single primary named by every node for 3 s within %s: %s", timeout, last)
	}
	for _, m := range want {
		if m == found {
			return found
		}
	}
	f.t.Fatalf("%s became primary, want one of %v", found.host.Name, want)
	return nil
}

// agreedPrimary returns the one running primary when every running node
// names it (else nil), and what each node said.
func (f *flyCluster) agreedPrimary() (*flyMachine, string) {
	var found *flyMachine
	var said strings.Builder
	names := map[*flyMachine]string{}
	for _, m := range f.machines {
		if !m.Running() {
			continue
		}
		isPrimary, name, err := flyRole(m)
		if err != nil {
			return nil, fmt.Sprintf("%s: %v", m.host.Name, err)
		}
		if isPrimary && m.region != "iad" {
			f.t.Fatalf("%s in %s, not PRIMARY_REGION, became primary", m.host.Name, m.region)
		}
		fmt.Fprintf(&said, "%s: primary=%v names %q; ", m.host.Name, isPrimary, name)
		names[m] = name
		if isPrimary {
			if found != nil {
				return nil, said.String()
			}
			found = m
		}
	}
	for _, name := range names {
		if found == nil || name != found.alloc {
			return nil, said.String()
		}
	}
	return found, said.String()
}

// flyRole is litefs_is_primary and GET /primary of m.
func flyRole(m *flyMachine) (bool, string, error) {
	code, body, _, err := netGet(m.URL + "/metrics")
	if err != nil || code != http.StatusOK {
		return false, "", fmt.Errorf("GET /metrics: %d %v", code, err)
	}
	isPrimary := regexp.MustCompile(`(?m)^litefs_is_primary 1$`).MatchString(body)
	code, body, _, err = netGet(m.URL + "/primary")
	if err != nil || code != http.StatusOK {
		return false, "", fmt.Errorf("GET /primary: %d %v", code, err)
	}
	return isPrimary, strings.TrimSpace(body), nil
}

// flyPost POSTs an item to h's proxy (proxy.addr :8080).
func flyPost(t testing.TB, h *netHost, name string) (int, string, http.Header) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"name": name, "value": "v"})
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Post(h.URL(8080)+"/items", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s/items: %v", h.URL(8080), err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// postItem writes an item through the primary's proxy; it returns the
// item's ID and the __txid cookie the proxy set.
func (f *flyCluster) postItem(h *netHost, name string) (int64, string) {
	f.t.Helper()
	var code int
	var body string
	var hdr http.Header
	// The example app may still be starting on a new primary.
	if !pollUntil(30*time.Second, func() bool {
		code, body, hdr = flyPost(f.t, h, name)
		return code == http.StatusCreated
	}) {
		f.t.Fatalf("POST /items on %s's proxy: %d %s", h.Name, code, body)
	}
	var it struct {
		ID int64 `json:"id"`
	}
	if err := json.Unmarshal([]byte(body), &it); err != nil || it.ID == 0 {
		f.t.Fatalf("POST /items on %s: %d %s", h.Name, code, body)
	}
	cookie := ""
	for _, c := range (&http.Response{Header: hdr}).Cookies() {
		if c.Name == "__txid" {
			cookie = c.Value
		}
	}
	if cookie == "" {
		f.t.Errorf("POST /items on %s set no __txid cookie: %v", h.Name, hdr)
	}
	return it.ID, cookie
}

// checkItem reads item id on m: through its proxy (waiting for the
// cookie's TXID), and with sqlite3 on its mount.
func (f *flyCluster) checkItem(m *flyMachine, id int64, cookie, name string) {
	f.t.Helper()
	waitFor(f.t, 30*time.Second, fmt.Sprintf("item %d on %s's proxy", id, m.host.Name), func() bool {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/items/%d", m.host.URL(8080), id), nil)
		if cookie != "" {
			req.AddCookie(&http.Cookie{Name: "__txid", Value: cookie})
		}
		resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && strings.Contains(string(b), name)
	})
	// In the node's mount namespace: SQLite resolves /proc/<pid>/root.
	cmd := exec.Command("nsenter", fmt.Sprintf("--mount=/proc/%d/ns/mnt", m.pid()), "sqlite3", "/litefs/db",
		fmt.Sprintf("select name from items where id = %d;", id))
	b, err := cmd.CombinedOutput()
	out := string(b)
	if err != nil || strings.TrimSpace(out) != name {
		f.t.Errorf("sqlite3 on %s's mount: item %d = %q (%v), want %q", m.host.Name, id, out, err, name)
	}
}

// procListens reports whether m's network namespace has a listening socket
// on addr (hex, as /proc/net/tcp6 writes it) and port.
func procListens(t testing.TB, m *flyMachine, table, addr string, port int) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", m.pid(), table))
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf("%s:%04X", addr, port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		// sl local_address rem_address st ...; st 0A is LISTEN.
		if f := strings.Fields(line); len(f) > 3 && f[1] == local && f[3] == "0A" {
			return true
		}
	}
	return false
}

// flyShim is the `myapp` of deploy/fly/litefs.yml's exec; %q is the
// example app. Its migration is the example app's table.
const flyShim = `#!/bin/sh
case "$1" in
migrate)
	db=$3
	for i in $(seq 120); do
		sqlite3 "$db" "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, value TEXT NOT NULL, created_at TEXT NOT NULL)" 2>/dev/null && exit 0
		sleep 0.5
	done
	echo "myapp migrate: $db stayed read-only" >&2
	exit 1 ;;
serve)
	shift
	exec %q "$@" ;;
esac
echo "myapp: unknown command $1" >&2
exit 2
`
