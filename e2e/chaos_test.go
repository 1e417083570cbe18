//go:build integration

package e2e

import (
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/consultest"
)

// The chaos suite (issue 15): three nodes and a Consul agent, each in a
// network namespace of its own on fdaa:0:1::/64 (netLab), every node's
// data.dir on a small tmpfs, replication.sync-replicas: 1, and a writer on
// every node that records each commit it was told succeeded. Randomized
// rounds of faults (kill -9, SIGSTOP/SIGCONT, partitions, a link down,
// restarts, a full disk) each end healed, and then four checks run:
//
//  1. no two nodes accepted writes in the same lease epoch (nor a replica
//     at all), and no two nodes' accepted writes overlap in time;
//  2. every acknowledged write is on the final primary (one found only in
//     a copy kept aside under data.dir/diverged counts as lost);
//  3. every node converges to one TXID and checksum (the -pos files);
//  4. every copy kept aside is a sound database under data.dir/diverged,
//     named in its node's log.
//
// And one more, from the suite's own shape: every transaction after the
// table's creation inserts one row, so a copy at TXID T, on a node or kept
// aside, holds T-base rows (base: the TXID of the empty table); more or
// fewer mean its position does not describe its bytes.
//
// Each round logs a summary line and the test a final tally. By default it
// runs a few rounds within a 5-minute budget (CI); for a long run:
//
//	PAGEWIRE_E2E_RACE=0 go test -tags integration -p 1 -run TestChaos -timeout 0 ./e2e/ \
//	    -chaos.rounds=200 -chaos.budget=0 -v

var (
	chaosRounds  = flag.Int("chaos.rounds", 26, "rounds of TestChaos (at most: -chaos.budget may end it sooner); the faults are dealt as a shuffled deck, so 26 runs each twice")
	chaosBudget  = flag.Duration("chaos.budget", 5*time.Minute, "TestChaos starts no round once less than 45 s of this is left (counted from its start); 0: no limit")
	chaosSeed    = flag.Uint64("chaos.seed", 0, "TestChaos's random seed; 0: from the clock")
	chaosActions = flag.String("chaos.actions", "", "TestChaos's faults to pick from, comma-separated (see chaosFaults); \"\": all")
)

const (
	chaosDB    = "chaos.db"
	chaosPort  = 20202
	chaosTmpfs = "size=64m,mode=0755" // each node's disk
	// chaosRoundReserve is what the budget keeps for the last round.
	chaosRoundReserve = 45 * time.Second
)

// chaosFaults are the faults a round picks from. Each names its target:
// the primary or a replica at the round's start. The durations straddle
// what decides the outcome, and no more, so that rounds are short: the
// check TTL (2 s: a primary that cannot pass its check stops writing, and
// a new one takes over ~3 s after), and for faults that cut the primary
// from Consul the session TTL (10 s) as well.
var chaosFaults = []string{
	"kill-primary",              // kill -9, then start it again
	"kill-replica",              // kill -9, 0-2 s down, then start it again
	"stop-primary",              // SIGSTOP for 0.5-10 s, then SIGCONT
	"stop-replica",              // SIGSTOP for 0.5-5 s, then SIGCONT
	"cut-primary-consul",        // partition primary | Consul, 1-12 s
	"cut-primary-replicas",      // partition primary | replicas, 1-8 s
	"isolate-primary",           // both partitions at once, 1-12 s
	"link-down-primary",         // ip link set eth0 down, 1-12 s
	"cut-replicas-kill-primary", // primary | replicas for 2-4 s, then kill -9 of the primary
	"restart-primary",           // SIGTERM (a handoff), then start it again
	"restart-replica",           // SIGTERM, then start it again
	"disk-full-primary",         // fill its tmpfs for 1-4 s
	"disk-full-replica",         // fill its tmpfs for 1-4 s
}

// chaosNode is a node of the suite, with its writer.
type chaosNode struct {
	*Node
	idx    int
	name   string // its lease hostname
	host   *netHost
	disk   string // its tmpfs; data.dir is disk/data
	writer *proc
	seen   int  // writer lines read so far
	paused bool // the writer said it paused
	frozen bool
	filler string // a file filling its disk, while it is full
	lives  int    // earlier processes, their logs in chaos.logDir
}

// chaosWrite is a commit a writer was told succeeded.
type chaosWrite struct {
	node, seq int
	t0, t1    float64
	e0, e1    int64 // the node's epoch before and after; -1 unknown
	p0, p1    int   // 1 if it was the primary before / after, 0 if not, -1 unknown
}

// definite says whether w's node was the primary of one known epoch from
// before the commit to after it, and which.
func (w chaosWrite) definite() (int64, bool) {
	return w.e0, w.e0 >= 0 && w.e0 == w.e1 && w.p0 == 1 && w.p1 == 1
}

// chaosTally is the run's counts.
type chaosTally struct {
	rounds, converged int
	actions           map[string]int
	splitBrain        int            // writes accepted in an epoch another node also wrote in
	replicaWrites     int            // writes accepted by a node that was a replica before and after
	overlaps          int            // pairs of two nodes' accepted writes overlapping in time
	ambiguous         int            // writes during which the node's epoch or role changed
	lost, lostAside   int            // acknowledged writes missing from the final primary; of which in a kept copy
	keptAside         int            // diverged copies found
	unnamed           int            // kept copies no log line names
	mismatched        int            // copies (on a node or kept aside) whose rows disagree with their TXID
	reasons           map[string]int // why copies were kept aside, numbers as N
	unwritable        int            // rounds with no write accepted within 30 s of healing
	failovers         []time.Duration
}

type chaos struct {
	t       *testing.T
	rng     *rand.Rand
	lab     *netLab
	consul  *netHost
	nodes   []*chaosNode
	pause   string // the writers' pause file
	logDir  string // logs of the nodes' earlier processes
	keepDir string // the kept copies, moved out of the tmpfs
	writes  []chaosWrite
	freezes []frozen
	base    int               // chaos.db's TXID with its table empty
	aside   map[[2]int]string // rows found in kept copies: the copy
	lost    map[[2]int]bool   // acknowledged writes found lost so far
	tally   chaosTally
}

func TestChaos_Rounds(t *testing.T) {
	if testing.Short() {
		t.Skip("minutes long")
	}
	if why := labAvailable(); why != "" {
		t.Skip(why)
	}
	start := time.Now()
	seed := *chaosSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (-chaos.seed=%d repeats the choices)", seed, seed)
	c := &chaos{t: t, rng: rand.New(rand.NewPCG(seed, 0)), aside: map[[2]int]string{}, lost: map[[2]int]bool{},
		tally: chaosTally{actions: map[string]int{}, reasons: map[string]int{}}}
	var err error
	if c.logDir, err = os.MkdirTemp("", "pagewire-chaos-"); err != nil {
		t.Fatal(err)
	}
	c.keepDir = filepath.Join(c.logDir, "diverged")
	if err := os.Mkdir(c.keepDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.saveLogs("end")
			t.Logf("the nodes' earlier logs and the kept copies are in %s", c.logDir)
			return
		}
		os.RemoveAll(c.logDir)
	})
	c.setup()
	defer c.logTally()

	deck := []string{}
	for round := 1; round <= *chaosRounds; round++ {
		if *chaosBudget > 0 && time.Since(start) > *chaosBudget-chaosRoundReserve {
			t.Logf("budget %s reached: stopping after %d rounds", *chaosBudget, round-1)
			break
		}
		if len(deck) == 0 {
			deck = slices.Clone(chaosFaults)
			if *chaosActions != "" {
				deck = strings.Split(*chaosActions, ",")
				for _, a := range deck {
					if !slices.Contains(chaosFaults, a) {
						t.Fatalf("-chaos.actions: no fault %q: choose from %s", a, strings.Join(chaosFaults, ","))
					}
				}
			}
			c.rng.Shuffle(len(deck), func(i, j int) { deck[i], deck[j] = deck[j], deck[i] })
		}
		action := deck[0]
		deck = deck[1:]
		c.round(round, action)
	}
	c.check()
}

// setup makes the network, the agent and the nodes, the database and the
// writers.
func (c *chaos) setup() {
	t := c.t
	c.lab = newNetLab(t)
	c.consul = c.lab.AddHost("consul", "10")
	agent := consultest.StartWith(t, consultest.Options{Prefix: c.consul.Exec(), Addr: c.consul.Addr})
	for i := range 3 {
		name := fmt.Sprintf("node%d", i+1)
		cn := &chaosNode{idx: i, name: name, host: c.lab.AddHost(name, strconv.Itoa(i+2))}
		cn.Node = StartNode(t, NodeOptions{
			Exec:      cn.host.Exec(),
			URL:       cn.host.URL(chaosPort),
			Listen:    fmt.Sprintf("[::]:%d", chaosPort),
			Retention: "1m",
			Config:    "replication:\n  sync-replicas: 1\n  sync-timeout: 0s\n",
			Lease: fmt.Sprintf(`lease:
  type: consul
  hostname: %s
  advertise-url: "{{URL}}"
  candidate: true
  consul:
    url: %q
    key: pagewire-chaos/primary
    ttl: 10s
    lock-delay: 1s
`, name, agent.URL),
			Prepare: func(n *Node) {
				cn.disk = filepath.Join(n.Dir, "disk")
				if err := os.Mkdir(cn.disk, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := syscall.Mount(labTmpfs, cn.disk, "tmpfs", 0, chaosTmpfs); err != nil {
					t.Fatalf("mount a tmpfs on %s: %v", cn.disk, err)
				}
				t.Cleanup(func() { _ = syscall.Unmount(cn.disk, syscall.MNT_DETACH) })
				n.DataDir = filepath.Join(cn.disk, "data")
			},
		})
		cn.HTTP = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		c.nodes = append(c.nodes, cn)
	}
	// Before the nodes' cleanups: thaw and heal, so that they stop quickly.
	t.Cleanup(func() {
		for _, n := range c.nodes {
			if n.frozen && n.Running() {
				_ = n.cmd.Process.Signal(syscall.SIGCONT)
			}
		}
		c.lab.Heal()
	})

	p, _ := c.onePrimary(90 * time.Second)
	if p == nil {
		t.Fatal("no primary within 90 s of the start")
	}
	python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("create table w(id integer primary key, node int, seq int, t real)")
`, p.Path(chaosDB))
	pos, ok := c.converge(60 * time.Second)
	if !ok {
		t.Fatal("the nodes did not all get chaos.db within 60 s")
	}
	if _, err := fmt.Sscanf(pos, "%16x", &c.base); err != nil {
		t.Fatalf("chaos.db-pos %q: %v", pos, err)
	}

	c.pause = filepath.Join(t.TempDir(), "pause")
	script := readTestdata(t, "chaos_writer.py")
	for _, n := range c.nodes {
		args := append(n.host.Exec(), "python3", "-u", "-c", script, n.Path(chaosDB), strconv.Itoa(n.idx),
			fmt.Sprintf("http://[::1]:%d", chaosPort), c.pause)
		n.writer = startProc(t, "writer on "+n.name, args[0], args[1:]...)
	}
	waitFor(t, 60*time.Second, "the primary's writer to commit", func() bool {
		c.collect()
		return len(c.writes) > 0
	})
}

// dbState is what a node's HTTP API says of chaos.db.
type dbState struct {
	IsPrimary bool   `json:"is_primary"`
	Primary   string `json:"primary"`
	Epoch     int64  `json:"epoch"`
	TXID      string `json:"txid"`
	Checksum  string `json:"checksum"`
}

// state asks n's API; it fails for a node that is down, frozen or cut off.
func (c *chaos) state(n *chaosNode) (dbState, error) {
	if !n.Running() || n.frozen {
		return dbState{}, errors.New("not running")
	}
	var body struct {
		Databases []struct {
			Name string `json:"name"`
			dbState
		} `json:"databases"`
	}
	b, err := c.get(n, "/api/v1/dbs")
	if err != nil {
		return dbState{}, err
	}
	if err := json.Unmarshal([]byte(b), &body); err != nil {
		return dbState{}, err
	}
	for _, d := range body.Databases {
		if d.Name == chaosDB {
			return d.dbState, nil
		}
	}
	if len(body.Databases) == 0 {
		// Before chaos.db: a node with no database still has a role.
		host, err := c.get(n, "/primary")
		if err != nil {
			return dbState{}, err
		}
		metrics, err := c.get(n, "/metrics")
		if err != nil {
			return dbState{}, err
		}
		return dbState{IsPrimary: strings.Contains(metrics, "\nlitefs_is_primary 1"), Primary: strings.TrimSpace(host), Epoch: -1}, nil
	}
	return dbState{}, fmt.Errorf("no %s", chaosDB)
}

// get fetches a path of n's HTTP API; a status other than 200 is an error.
func (c *chaos) get(n *chaosNode, path string) (string, error) {
	resp, err := n.HTTP.Get(n.URL + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	return string(b), err
}

// primaryAmong returns the one node of ns that says it is the primary, if
// exactly one does.
func (c *chaos) primaryAmong(ns []*chaosNode) *chaosNode {
	var found []*chaosNode
	for _, n := range ns {
		if s, err := c.state(n); err == nil && s.IsPrimary {
			found = append(found, n)
		}
	}
	if len(found) != 1 {
		return nil
	}
	return found[0]
}

// onePrimary waits until every node runs, exactly one is the primary, and
// all name it at one epoch; nil if that does not happen within timeout.
func (c *chaos) onePrimary(timeout time.Duration) (*chaosNode, int64) {
	var p *chaosNode
	var epoch int64
	pollUntil(timeout, func() bool {
		p = nil
		var states []dbState
		for _, n := range c.nodes {
			s, err := c.state(n)
			if err != nil {
				return false
			}
			if s.IsPrimary {
				if p != nil {
					return false
				}
				p = n
			}
			states = append(states, s)
		}
		if p == nil {
			return false
		}
		for _, s := range states {
			if s.Primary != p.name || s.Epoch != states[p.idx].Epoch {
				return false
			}
		}
		epoch = states[p.idx].Epoch
		return true
	})
	if p == nil {
		return nil, 0
	}
	return p, epoch
}

// others returns the nodes but n.
func (c *chaos) others(n *chaosNode) []*chaosNode {
	var out []*chaosNode
	for _, o := range c.nodes {
		if o != n {
			out = append(out, o)
		}
	}
	return out
}

// collect reads the writers' new lines.
func (c *chaos) collect() {
	for _, n := range c.nodes {
		lines := n.writer.Lines()
		for _, line := range lines[n.seen:] {
			var w chaosWrite
			switch {
			case strings.HasPrefix(line, "paused "):
				n.paused = true
			case strings.HasPrefix(line, "resumed "):
				n.paused = false
			default:
				if _, err := fmt.Sscanf(line, "ok %d %f %f %d %d %d %d", &w.seq, &w.t0, &w.t1, &w.e0, &w.p0, &w.e1, &w.p1); err != nil {
					c.t.Fatalf("writer on %s printed %q: %v", n.name, line, err)
				}
				w.node = n.idx
				c.writes = append(c.writes, w)
			}
		}
		n.seen = len(lines)
	}
}

// pauseWriters stops the writers between commits, so that the nodes can
// converge on a TXID that stays put.
func (c *chaos) pauseWriters() {
	if err := os.WriteFile(c.pause, nil, 0o644); err != nil {
		c.t.Fatal(err)
	}
	paused := func() bool {
		c.collect()
		for _, n := range c.nodes {
			if !n.paused {
				return false
			}
		}
		return true
	}
	if pollUntil(60*time.Second, paused) {
		return
	}
	// A writer stuck in a commit: say where, with every node's log, before
	// failing.
	for _, n := range c.nodes {
		if !n.paused {
			pid := n.writer.cmd.Process.Pid
			wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
			stack, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stack", pid))
			c.t.Logf("the writer on %s (pid %d) has not paused: waiting in %s\n%s", n.name, pid, wchan, stack)
		}
	}
	c.saveLogs("stuck")
	c.t.Fatal("timed out after 60s waiting for every writer to pause: a commit hangs (see the writers' kernel stacks above and the nodes' logs)")
}

func (c *chaos) resumeWriters() {
	if err := os.Remove(c.pause); err != nil {
		c.t.Fatal(err)
	}
}

// sleep waits a random time in [lo, hi] seconds.
func (c *chaos) sleep(lo, hi float64) time.Duration {
	d := time.Duration((lo + c.rng.Float64()*(hi-lo)) * float64(time.Second))
	time.Sleep(d)
	return d
}

func (c *chaos) freeze(n *chaosNode) {
	if err := n.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		c.t.Fatal(err)
	}
	n.frozen = true
	c.freezes = append(c.freezes, frozen{node: n.idx, from: now()})
}

func (c *chaos) thaw(n *chaosNode) {
	if !n.frozen {
		return
	}
	if err := n.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		c.t.Fatal(err)
	}
	n.frozen = false
	// A reply held up by the freeze can arrive a little after SIGCONT.
	c.freezes[len(c.freezes)-1].to = now() + 1
}

// stop sends SIGTERM and waits (30 s, then SIGKILL); unlike Node.Stop it
// accepts any exit code.
func (c *chaos) stop(n *chaosNode) {
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
		c.t.Logf("%s did not stop within 30 s of SIGTERM: killing it", n.name)
		n.Kill()
	}
}

// fillDisk fills n's tmpfs.
func (c *chaos) fillDisk(n *chaosNode) {
	n.filler = filepath.Join(n.disk, "filler")
	f, err := os.Create(n.filler)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	for _, size := range []int{1 << 20, 4 << 10, 512} {
		buf := make([]byte, size)
		for {
			if _, err := f.Write(buf); err != nil {
				break // ENOSPC
			}
		}
	}
}

// restart starts a node that is not running, keeping its last log.
func (c *chaos) restart(n *chaosNode) {
	n.lives++
	if err := os.WriteFile(filepath.Join(c.logDir, fmt.Sprintf("%s.%d.log", n.name, n.lives)), []byte(n.Log.String()), 0o644); err != nil {
		c.t.Fatal(err)
	}
	n.Start(false)
}

// saveLogs writes every node's current log as <node>.<tag>.log, for a
// round to be diagnosed after the run.
func (c *chaos) saveLogs(tag string) {
	for _, n := range c.nodes {
		path := filepath.Join(c.logDir, fmt.Sprintf("%s.%s.log", n.name, tag))
		if err := os.WriteFile(path, []byte(n.Log.String()), 0o644); err != nil {
			c.t.Error(err)
		}
	}
	c.t.Logf("logs of every node: %s/*.%s.log", c.logDir, tag)
}

// heal ends every fault: the network, freezes, full disks, stopped nodes.
func (c *chaos) heal() {
	c.lab.Heal()
	for _, n := range c.nodes {
		c.thaw(n)
		if n.filler != "" {
			if err := os.Remove(n.filler); err != nil {
				c.t.Fatal(err)
			}
			n.filler = ""
		}
	}
	for _, n := range c.nodes {
		if !n.Running() {
			c.restart(n)
		}
	}
}

// converge waits until every node's chaos.db is at the primary's position;
// it returns that position.
func (c *chaos) converge(timeout time.Duration) (string, bool) {
	var want string
	ok := pollUntil(timeout, func() bool {
		p := c.primaryAmong(c.nodes)
		if p == nil {
			return false
		}
		b, err := os.ReadFile(p.Path(chaosDB + "-pos"))
		if err != nil {
			return false
		}
		want = strings.TrimSpace(string(b))
		for _, n := range c.others(p) {
			b, err := os.ReadFile(n.Path(chaosDB + "-pos"))
			if err != nil || strings.TrimSpace(string(b)) != want {
				return false
			}
		}
		return true
	})
	return want, ok
}

// act applies a round's fault to the cluster whose primary is p.
func (c *chaos) act(action string, p *chaosNode) string {
	others := c.others(p)
	r := others[c.rng.IntN(len(others))]
	switch action {
	case "kill-primary":
		p.Kill()
		return c.failover(others)
	case "kill-replica":
		r.Kill()
		return fmt.Sprintf("%s down %.1f s", r.name, c.sleep(0, 2).Seconds())
	case "stop-primary":
		c.freeze(p)
		return fmt.Sprintf("frozen %.1f s", c.sleep(0.5, 10).Seconds())
	case "stop-replica":
		c.freeze(r)
		return fmt.Sprintf("%s frozen %.1f s", r.name, c.sleep(0.5, 5).Seconds())
	case "cut-primary-consul":
		c.lab.Cut(p.host, c.consul)
		return fmt.Sprintf("cut %.1f s", c.sleep(1, 12).Seconds())
	case "cut-primary-replicas":
		for _, o := range others {
			c.lab.Cut(p.host, o.host)
		}
		return fmt.Sprintf("cut %.1f s", c.sleep(1, 8).Seconds())
	case "isolate-primary":
		c.lab.Cut(p.host, c.consul)
		for _, o := range others {
			c.lab.Cut(p.host, o.host)
		}
		return fmt.Sprintf("cut %.1f s", c.sleep(1, 12).Seconds())
	case "link-down-primary":
		c.lab.LinkDown(p.host)
		return fmt.Sprintf("down %.1f s", c.sleep(1, 12).Seconds())
	case "cut-replicas-kill-primary":
		for _, o := range others {
			c.lab.Cut(p.host, o.host)
		}
		d := c.sleep(2, 4)
		p.Kill()
		c.lab.Heal()
		return fmt.Sprintf("cut %.1f s, then kill -9; %s", d.Seconds(), c.failover(others))
	case "restart-primary":
		c.stop(p)
		return "SIGTERM"
	case "restart-replica":
		c.stop(r)
		return r.name + " SIGTERM"
	case "disk-full-primary":
		c.fillDisk(p)
		return fmt.Sprintf("full %.1f s", c.sleep(1, 4).Seconds())
	case "disk-full-replica":
		c.fillDisk(r)
		return fmt.Sprintf("%s full %.1f s", r.name, c.sleep(1, 4).Seconds())
	}
	c.t.Fatalf("unknown action %q", action)
	return ""
}

// failover waits, after kill -9 of the primary, for one of others to take
// over (before the killed node starts again), and measures how long that took.
func (c *chaos) failover(others []*chaosNode) string {
	killed := time.Now()
	if pollUntil(60*time.Second, func() bool { return c.primaryAmong(others) != nil }) {
		d := time.Since(killed)
		c.tally.failovers = append(c.tally.failovers, d)
		return fmt.Sprintf("new primary %.1f s after kill -9", d.Seconds())
	}
	return "no new primary within 60 s of kill -9"
}

// round runs one fault, heals, and checks.
func (c *chaos) round(round int, action string) {
	t := c.t
	start := time.Now()
	p, epoch0 := c.onePrimary(2 * time.Minute)
	if p == nil {
		t.Fatalf("round %d: no single primary within 2 minutes before it", round)
	}
	c.collect()
	acked0 := len(c.writes)
	note := c.act(action, p)
	c.heal()
	if healedP, _ := c.onePrimary(2 * time.Minute); healedP == nil {
		t.Fatalf("round %d (%s): no single primary within 2 minutes of healing", round, action)
	}
	// The cluster takes writes again before the round ends: a primary of
	// one epoch from before to after the commit. (The lease may still move
	// after the heal: a primary cut from Consul finds out late that its
	// session is gone; the round's last primary is the one after that.)
	healed := now()
	if !pollUntil(30*time.Second, func() bool {
		c.collect()
		return slices.ContainsFunc(c.writes[acked0:], func(w chaosWrite) bool { _, ok := w.definite(); return ok && w.t0 > healed })
	}) {
		c.tally.unwritable++
		note += "; no write accepted within 30 s of healing"
	}
	c.pauseWriters()
	np, epoch := c.onePrimary(2 * time.Minute)
	if np == nil {
		t.Fatalf("round %d (%s): no single primary within 2 minutes of pausing the writers", round, action)
	}
	pos, converged := c.converge(60 * time.Second)
	c.tally.rounds++
	c.tally.actions[action]++
	if converged {
		c.tally.converged++
	}
	kept := c.keepAside(round)
	before := c.tally
	lost, aside := c.checkLost(np)
	if converged {
		c.checkContents(round)
	}
	c.checkWriters()
	c.resumeWriters()

	status := "converged"
	if !converged {
		status = "NOT CONVERGED: " + c.positions()
		c.saveLogs(fmt.Sprintf("r%d", round))
		t.Errorf("round %d (%s): the nodes did not converge within 60 s: %s", round, action, c.positions())
	}
	var problems []string
	if d := c.tally.splitBrain - before.splitBrain + c.tally.replicaWrites - before.replicaWrites; d > 0 {
		problems = append(problems, fmt.Sprintf("%d split-brain writes", d))
	}
	if d := c.tally.overlaps - before.overlaps; d > 0 {
		problems = append(problems, fmt.Sprintf("%d overlapping writes", d))
	}
	if lost > 0 {
		problems = append(problems, fmt.Sprintf("%d acked writes lost (%d only in diverged/)", lost, aside))
	}
	if len(problems) > 0 {
		t.Errorf("round %d (%s): %s", round, action, strings.Join(problems, ", "))
	}
	t.Logf("round %3d %-25s %s -> %s epoch %d -> %d, acked +%d (%d), %s %s, kept aside %d, %s [%s] in %.1f s",
		round, action, p.name, np.name, epoch0, epoch, len(c.writes)-acked0, len(c.writes), chaosDB, pos, kept,
		cmp.Or(strings.Join(problems, ", "), "ok"), note+"; "+status, time.Since(start).Seconds())
}

// positions lists each node's chaos.db -pos.
func (c *chaos) positions() string {
	var out []string
	for _, n := range c.nodes {
		b, err := os.ReadFile(n.Path(chaosDB + "-pos"))
		pos := strings.TrimSpace(string(b))
		if err != nil {
			pos = err.Error()
		}
		out = append(out, n.name+" "+pos)
	}
	return strings.Join(out, ", ")
}

// keepAside checks the copies the nodes kept aside since the last round
// (check 4): each is named in its node's log and is a sound database; it
// moves them off the tmpfs and remembers their rows. It returns how many.
func (c *chaos) keepAside(round int) int {
	kept := 0
	for _, n := range c.nodes {
		copies, _ := filepath.Glob(filepath.Join(n.DataDir, "diverged", chaosDB+".*"))
		for _, path := range copies {
			kept++
			c.tally.keptAside++
			if line := c.logLine(n, path); line == "" {
				c.tally.unnamed++
				c.t.Errorf("round %d: %s kept %s aside without a log line naming it", round, n.name, path)
			} else {
				reason := "unknown"
				if m := chaosReason.FindStringSubmatch(line); m != nil {
					reason = chaosNumber.ReplaceAllString(m[1], "N")
				}
				c.tally.reasons[reason]++
			}
			dst := filepath.Join(c.keepDir, fmt.Sprintf("%s.r%d.%s", n.name, round, filepath.Base(path)))
			if err := os.Rename(path, dst); err != nil {
				b, rerr := os.ReadFile(path)
				if rerr != nil {
					c.t.Fatal(rerr)
				}
				if err := os.WriteFile(dst, b, 0o644); err != nil {
					c.t.Fatal(err)
				}
				_ = os.Remove(path)
			}
			rows, check := c.rows(dst)
			if check != "ok" {
				c.t.Errorf("round %d: the copy %s kept aside fails integrity_check: %s", round, path, check)
			}
			var txid uint64
			if _, err := fmt.Sscanf(strings.TrimPrefix(filepath.Base(path), chaosDB+"."), "%16x", &txid); err != nil {
				c.t.Errorf("round %d: kept copy %s: no TXID in its name", round, path)
			} else if len(rows) != int(txid)-c.base {
				c.tally.mismatched++
				c.t.Errorf("round %d: the copy %s kept aside is named TXID %d but holds %d rows, the content of TXID %d",
					round, path, txid, len(rows), len(rows)+c.base)
			}
			for k := range rows {
				if _, ok := c.aside[k]; !ok {
					c.aside[k] = dst
				}
			}
		}
	}
	return kept
}

// chaosReason finds the reason of a log line (slog's text format);
// chaosNumber its numbers, for the tally.
var (
	chaosReason = regexp.MustCompile(` reason="((?:[^"\\]|\\.)*)"`)
	chaosNumber = regexp.MustCompile(`[0-9]+`)
)

// logLine returns the first line of n's logs that names path, or "".
func (c *chaos) logLine(n *chaosNode, path string) string {
	logs := []string{n.Log.String()}
	for i := 1; i <= n.lives; i++ {
		b, _ := os.ReadFile(filepath.Join(c.logDir, fmt.Sprintf("%s.%d.log", n.name, i)))
		logs = append(logs, string(b))
	}
	for _, l := range logs {
		if i := strings.Index(l, path); i >= 0 {
			start := strings.LastIndexByte(l[:i], '\n') + 1
			end := l[start:]
			if j := strings.IndexByte(end, '\n'); j >= 0 {
				end = end[:j]
			}
			return end
		}
	}
	return ""
}

// rows reads the writers' rows of a database and its integrity_check.
func (c *chaos) rows(path string) (map[[2]int]bool, string) {
	out := python(c.t, readTestdata(c.t, "chaos_rows.py"), path)
	rows := map[[2]int]bool{}
	check := ""
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "check "); ok {
			check = rest
			continue
		}
		var k [2]int
		if _, err := fmt.Sscanf(line, "%d %d", &k[0], &k[1]); err != nil {
			c.t.Fatalf("chaos_rows.py on %s printed %q", path, line)
		}
		rows[k] = true
	}
	return rows, check
}

// checkContents compares each node's chaos.db rows with its TXID.
func (c *chaos) checkContents(round int) {
	for _, n := range c.nodes {
		var txid uint64
		b, err := os.ReadFile(n.Path(chaosDB + "-pos"))
		if err == nil {
			_, err = fmt.Sscanf(string(b), "%16x", &txid)
		}
		if err != nil {
			c.t.Errorf("round %d: %s's %s-pos: %v", round, n.name, chaosDB, err)
			continue
		}
		rows, check := c.rows(n.Path(chaosDB))
		if check != "ok" {
			c.t.Errorf("round %d: chaos.db on %s fails integrity_check: %s", round, n.name, check)
		}
		if len(rows) != int(txid)-c.base {
			c.tally.mismatched++
			c.t.Errorf("round %d: chaos.db on %s is at TXID %d but holds %d rows, the content of TXID %d", round, n.name, txid, len(rows), len(rows)+c.base)
		}
	}
}

// checkLost finds acknowledged writes missing from p (check 2); it returns
// how many newly went missing, and of those how many are in a kept copy.
func (c *chaos) checkLost(p *chaosNode) (lost, aside int) {
	rows, _ := c.rows(p.Path(chaosDB)) // checkContents checks it
	for _, w := range c.writes {
		k := [2]int{w.node, w.seq}
		if rows[k] || c.lost[k] {
			continue
		}
		c.lost[k] = true
		lost++
		c.tally.lost++
		where := "nowhere"
		if copy, ok := c.aside[k]; ok {
			aside++
			c.tally.lostAside++
			where = "only in " + copy
		}
		if lost <= 5 {
			c.t.Logf("acknowledged write lost: node%d seq %d at %.3f (epoch %d/%d, primary %d/%d), %s",
				w.node+1, w.seq, w.t0, w.e0, w.e1, w.p0, w.p1, where)
		}
	}
	return lost, aside
}

// checkWriters recounts check 1 over every acknowledged write so far.
func (c *chaos) checkWriters() {
	type first struct {
		node int
		t0   float64
	}
	firsts := map[int64]first{}
	splitBrain, replicaWrites, ambiguous := 0, 0, 0
	var ws []accepted
	for _, w := range c.writes {
		ws = append(ws, accepted{node: w.node, t0: w.t0, t1: w.t1})
		e, ok := w.definite()
		switch {
		case ok:
			if f, seen := firsts[e]; !seen || w.t0 < f.t0 {
				firsts[e] = first{w.node, w.t0}
			}
		case w.e0 >= 0 && w.e0 == w.e1 && w.p0 == 0 && w.p1 == 0:
			// A replica from before to after, of one epoch: no lease of
			// its own could have come and gone in between.
			replicaWrites++
		default:
			ambiguous++
		}
	}
	for _, w := range c.writes {
		if e, ok := w.definite(); ok && firsts[e].node != w.node {
			splitBrain++
		}
	}
	overlaps, example, _ := doubleWriters(ws, c.freezes...)
	if overlaps > c.tally.overlaps {
		c.t.Logf("writes of two nodes overlapping in time, e.g. %s", example)
	}
	c.tally.splitBrain, c.tally.replicaWrites, c.tally.ambiguous, c.tally.overlaps = splitBrain, replicaWrites, ambiguous, overlaps
}

func (c *chaos) logTally() {
	tl := c.tally
	var acts []string
	for a, n := range tl.actions {
		acts = append(acts, fmt.Sprintf("%s %d", a, n))
	}
	sort.Strings(acts)
	pct := 0.0
	if tl.rounds > 0 {
		pct = 100 * float64(tl.converged) / float64(tl.rounds)
	}
	c.t.Logf("chaos tally: %d rounds (%s)", tl.rounds, strings.Join(acts, ", "))
	c.t.Logf("chaos tally: %d acknowledged writes; split-brain writes %d (same epoch as another node %d, by a replica %d), overlapping writes %d, epoch changed during the commit %d",
		len(c.writes), tl.splitBrain+tl.replicaWrites, tl.splitBrain, tl.replicaWrites, tl.overlaps, tl.ambiguous)
	c.t.Logf("chaos tally: acknowledged writes lost %d (%d only in diverged/), convergence %d/%d (%.0f%%), copies kept aside %d (%d not named in a log), copies whose rows disagree with their TXID %d",
		tl.lost, tl.lostAside, tl.converged, tl.rounds, pct, tl.keptAside, tl.unnamed, tl.mismatched)
	if len(tl.reasons) > 0 {
		var rs []string
		for r, n := range tl.reasons {
			rs = append(rs, fmt.Sprintf("%d: %s", n, r))
		}
		sort.Strings(rs)
		c.t.Logf("chaos tally: why copies were kept aside: %s", strings.Join(rs, "; "))
	}
	c.t.Logf("chaos tally: rounds with no write accepted within 30 s of healing %d", tl.unwritable)
	if fs := slices.Clone(tl.failovers); len(fs) > 0 {
		slices.Sort(fs)
		c.t.Logf("chaos tally: a new primary after kill -9 of the primary: median %.1f s, max %.1f s (%d)",
			fs[len(fs)/2].Seconds(), fs[len(fs)-1].Seconds(), len(fs))
	}
}

// check fails the test on the run's totals (the rounds already reported
// their own).
func (c *chaos) check() {
	tl := c.tally
	if tl.rounds == 0 {
		c.t.Fatal("no round ran")
	}
	if tl.splitBrain+tl.replicaWrites+tl.overlaps > 0 {
		c.t.Errorf("split brain: %d writes in another node's epoch, %d by a replica, %d overlapping", tl.splitBrain, tl.replicaWrites, tl.overlaps)
	}
	if tl.lost > 0 {
		c.t.Errorf("%d acknowledged writes lost with sync-replicas: 1", tl.lost)
	}
}
