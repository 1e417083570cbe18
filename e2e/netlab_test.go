//go:build integration

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// A netLab is a test's own IPv6 network, as Fly's 6PN: a bridge in a hub
// network namespace, one namespace per host with a veth "eth0" on the
// bridge and an fdaa:0:1::/64 address, and a veth from the test's own
// namespace (fdaa:0:1::1) so that the test reaches every host. Faults are
// per-destination blackhole routes (a partition between two hosts, both
// ways) and `ip link set eth0 down` (a host cut from everything but its own
// loopback): this kernel has no netem qdisc, and neither ip6tables nor nft
// is installed, so plain iproute2 is what works here.
//
// Everything has the labPrefix; newNetLab first removes what a killed run
// left behind (processes in its namespaces, the namespaces, the test's
// veth, its mounts), so only one lab runs on a machine at a time.
type netLab struct {
	t     testing.TB
	mu    sync.Mutex
	hosts []*netHost
	cuts  map[[2]*netHost]bool // blackholes in place, both ways
}

// netHost is a host of a netLab: a network namespace with one address.
type netHost struct {
	Name string // short name, e.g. "node1"
	NS   string // namespace name
	Addr string // its IPv6 address, e.g. fdaa:0:1::2
	down bool   // eth0 is down
}

const (
	labPrefix  = "pwchaos-"
	labHostDev = "pwchaos0"    // the test namespace's veth to the bridge
	labHostIP  = "fdaa:0:1::1" // its address
)

// Exec is the command prefix that runs a program in the host's network
// namespace, and only that (nsenter execs the program; `ip netns exec`
// would also give it a mount namespace of its own, hiding its FUSE mounts
// from the test).
func (h *netHost) Exec() []string { return []string{"nsenter", "--net=/run/netns/" + h.NS} }

// URL is http://[addr]:port.
func (h *netHost) URL(port int) string { return fmt.Sprintf("http://[%s]:%d", h.Addr, port) }

// labAvailable says why this machine cannot run a netLab, or "".
func labAvailable() string {
	if os.Geteuid() != 0 {
		return "network namespaces need root"
	}
	for _, bin := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(bin); err != nil {
			return bin + " is not installed (apt-get install iproute2 util-linux)"
		}
	}
	return ""
}

// newNetLab cleans up after a killed run, makes the hub with its bridge and
// the test namespace's veth, and removes it all when the test ends.
func newNetLab(t testing.TB) *netLab {
	t.Helper()
	labSweep(t)
	l := &netLab{t: t, cuts: map[[2]*netHost]bool{}}
	t.Cleanup(func() { labSweep(t) })
	hub := labPrefix + "hub"
	l.ip("netns", "add", hub)
	l.ip("-n", hub, "link", "set", "lo", "up")
	l.ip("-n", hub, "link", "add", "br0", "type", "bridge")
	l.ip("-n", hub, "link", "set", "br0", "up")
	l.ip("link", "add", labHostDev, "type", "veth", "peer", "name", "v-host", "netns", hub)
	l.ip("-n", hub, "link", "set", "v-host", "master", "br0", "up")
	l.ip("link", "set", labHostDev, "up")
	l.ip("-6", "addr", "add", labHostIP+"/64", "dev", labHostDev, "nodad")
	return l
}

// AddHost makes a namespace named labPrefix+name on the bridge at
// fdaa:0:1::<suffix>.
func (l *netLab) AddHost(name, suffix string) *netHost {
	l.t.Helper()
	h := &netHost{Name: name, NS: labPrefix + name, Addr: "fdaa:0:1::" + suffix}
	hub, peer := labPrefix+"hub", "v-"+name
	l.ip("netns", "add", h.NS)
	// Keep the address while eth0 is down, so that a link brought back
	// up serves again without being configured anew.
	l.run("ip", "netns", "exec", h.NS, "sysctl", "-qw", "net.ipv6.conf.all.keep_addr_on_down=1",
		"net.ipv6.conf.default.keep_addr_on_down=1")
	l.ip("-n", h.NS, "link", "set", "lo", "up")
	l.ip("-n", h.NS, "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", hub)
	l.ip("-n", hub, "link", "set", peer, "master", "br0", "up")
	l.ip("-n", h.NS, "link", "set", "eth0", "up")
	l.ip("-n", h.NS, "-6", "addr", "add", h.Addr+"/64", "dev", "eth0", "nodad")
	l.mu.Lock()
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()
	return h
}

// Cut partitions a and b: each drops what it sends the other.
func (l *netLab) Cut(a, b *netHost) {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cuts[[2]*netHost{a, b}] || l.cuts[[2]*netHost{b, a}] {
		return
	}
	l.ip("-n", a.NS, "-6", "route", "add", "blackhole", b.Addr+"/128")
	l.ip("-n", b.NS, "-6", "route", "add", "blackhole", a.Addr+"/128")
	l.cuts[[2]*netHost{a, b}] = true
}

// LinkDown takes h's eth0 down: h reaches only itself.
func (l *netLab) LinkDown(h *netHost) {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ip("-n", h.NS, "link", "set", "eth0", "down")
	h.down = true
}

// Heal removes every cut and brings every link up.
func (l *netLab) Heal() {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.cuts {
		l.ip("-n", c[0].NS, "-6", "route", "del", "blackhole", c[1].Addr+"/128")
		l.ip("-n", c[1].NS, "-6", "route", "del", "blackhole", c[0].Addr+"/128")
		delete(l.cuts, c)
	}
	for _, h := range l.hosts {
		if h.down {
			l.ip("-n", h.NS, "link", "set", "eth0", "up")
			h.down = false
		}
	}
}

func (l *netLab) ip(args ...string) {
	l.t.Helper()
	l.run("ip", args...)
}

func (l *netLab) run(prog string, args ...string) {
	l.t.Helper()
	if out, err := exec.Command(prog, args...).CombinedOutput(); err != nil {
		l.t.Fatalf("%s %s: %v\n%s", prog, strings.Join(args, " "), err, out)
	}
}

// labSweep removes what a lab made, whether this run's or a killed one's:
// it kills every process in a lab namespace (nodes, agents, writers),
// detaches the mounts of chaos tests (their FUSE mounts and tmpfs data
// dirs), then deletes the namespaces and the test's veth.
func labSweep(t testing.TB) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	var nss []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], labPrefix) {
			nss = append(nss, f[0])
		}
	}
	for _, ns := range nss {
		pids, _ := exec.Command("ip", "netns", "pids", ns).Output()
		for _, f := range strings.Fields(string(pids)) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
				// A stopped process dies of SIGKILL too.
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if mounts, err := os.ReadFile("/proc/mounts"); err == nil {
		for _, line := range strings.Split(string(mounts), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && (f[0] == labTmpfs || strings.Contains(f[1], "/TestChaos")) {
				_ = syscall.Unmount(f[1], syscall.MNT_DETACH)
			}
		}
	}
	for _, ns := range nss {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Logf("ip netns del %s: %v: %s", ns, err, out)
		}
	}
	// Gone with the hub if it was there; else it may be left alone.
	_ = exec.Command("ip", "link", "del", labHostDev).Run()
}

// labTmpfs is the source name of a chaos test's tmpfs mounts, so that
// labSweep finds those a killed run left.
const labTmpfs = "pwchaos"
