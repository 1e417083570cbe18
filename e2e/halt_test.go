//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	client "github.com/pagewire/pagewire/clients/go"
)

// Halt lock tests: a primary and two replicas (static lease) as separate
// processes; clients on a replica write through the halt lock.

// httpDo sends a request and returns the status code and body.
func httpDo(t testing.TB, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// haltJSON is POST /api/v1/dbs/{name}/halt's answer.
type haltJSON struct {
	ID, TXID, Expires, Holder string
}

func acquireHTTP(t testing.TB, n *Node, db, query string) haltJSON {
	t.Helper()
	code, body := httpDo(t, "POST", n.URL+"/api/v1/dbs/"+db+"/halt"+query, "")
	if code != 200 {
		t.Fatalf("POST halt on %s: %d %s", n.URL, code, body)
	}
	var h haltJSON
	if err := json.Unmarshal([]byte(body), &h); err != nil || h.ID == "" {
		t.Fatalf("POST halt: %v: %s", err, body)
	}
	return h
}

// metric returns a metric's value line from /metrics ("" if absent).
func metric(t testing.TB, n *Node, series string) string {
	t.Helper()
	_, body := n.HTTPGet("/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

func TestHalt_ReplicaWritesLandOnThePrimary(t *testing.T) {
	insert := readTestdata(t, "halt_insert.py") // inserts rows halt-0, halt-1, ...
	p, rs := startCluster(t, 2, "")
	r1, r2 := rs[0], rs[1]
	insertRows(t, p.Path("db"), 10)
	waitCaughtUp(t, "db", p, r1, r2)

	// The CLI holds the lock for its child: the child's writes are on the
	// primary when the CLI returns.
	out, code := r1.CLI("halt", "-name", "db", "-url", r1.URL, "--", "python3", "-c", insert, r1.Path("db"), "25")
	if code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("pagewire halt: exit %d\n%s", code, out)
	}
	if got := countAndCheck(t, p, "db"); got != "35\nok" {
		t.Fatalf("primary right after `pagewire halt` returned: %q, want 35 rows", got)
	}
	if got := countAndCheck(t, r1, "db"); got != "35\nok" {
		t.Fatalf("the writing replica: %q", got)
	}
	waitCaughtUp(t, "db", p, r1, r2)
	if got := countAndCheck(t, r2, "db"); got != "35\nok" {
		t.Fatalf("the other replica: %q", got)
	}
	// The lock is gone: the primary writes again, the replica may not.
	python(t, insert, p.Path("db"), "1")
	if out, err := pythonErr(insert, r1.Path("db"), "1"); err == nil || !strings.Contains(out, "readonly") {
		t.Fatalf("a write on the replica after the lock was released: %v\n%s", err, out)
	}

	// Through gRPC with the Go client's WithHalt, on the other replica.
	conn, err := client.Dial(r2.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	err = client.WithHalt(context.Background(), conn, "db", client.HaltOptions{}, func(ctx context.Context, lock client.HaltLock) error {
		if lock.Holder != r2.Hostname {
			return fmt.Errorf("holder %q, want %q", lock.Holder, r2.Hostname)
		}
		modernc(t, r2.Path("db"), "insert into t(v) values ('with-halt')", "insert into t(v) values ('with-halt-2')")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := countAndCheck(t, p, "db"); got != "38\nok" {
		t.Fatalf("primary after WithHalt returned: %q, want 38 rows", got)
	}
	waitCaughtUp(t, "db", p, r1, r2)
}

func TestHalt_LockBlocksPrimaryWritersAndShows(t *testing.T) {
	insert := readTestdata(t, "halt_insert.py") // inserts rows halt-0, halt-1, ...
	p, rs := startCluster(t, 1, "")
	r := rs[0]
	insertRows(t, p.Path("db"), 1)
	waitCaughtUp(t, "db", p, r)

	h := acquireHTTP(t, r, "db", "?ttl=20s")
	if h.Holder != r.Hostname {
		t.Fatalf("holder %q, want %q", h.Holder, r.Hostname)
	}
	// The primary's own writers wait for the lock, and give up.
	if out, err := pythonErr(insert, p.Path("db"), "1", "0.3"); err == nil || !strings.Contains(out, "locked") {
		t.Fatalf("a primary write while a replica holds the halt lock: %v\n%s", err, out)
	}
	for _, n := range []*Node{p, r} {
		if v := metric(t, n, `litefs_halt_lock_active{db="db"}`); v != "1" {
			t.Fatalf("litefs_halt_lock_active on %s = %q, want 1", n.URL, v)
		}
	}
	_, body := p.HTTPGet("/api/v1/dbs/db")
	var info struct {
		IsPrimary bool `json:"is_primary"`
		Replicas  []struct {
			Hostname string `json:"hostname"`
			TXID     string `json:"txid"`
		} `json:"replicas"`
		HaltLock *haltJSON `json:"halt_lock"`
	}
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		t.Fatal(err)
	}
	if !info.IsPrimary || info.HaltLock == nil || info.HaltLock.Holder != r.Hostname || info.HaltLock.ID != "" {
		t.Fatalf("GET /api/v1/dbs/db on the primary: %s", body)
	}
	if len(info.Replicas) != 1 || info.Replicas[0].Hostname != r.Hostname || info.Replicas[0].TXID != strings.Split(p.Pos("db"), "/")[0] {
		t.Fatalf("replicas on the primary: %s (pos %s)", body, p.Pos("db"))
	}
	if v := metric(t, p, "litefs_subscriber_count"); v != "1" {
		t.Fatalf("litefs_subscriber_count = %q", v)
	}
	// The replica knows the primary's position: no lag in transactions.
	txid, err := strconv.ParseUint(strings.Split(p.Pos("db"), "/")[0], 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the replica's position metrics", func() bool {
		return metric(t, r, `litefs_db_position_primary{db="db"}`) == fmt.Sprint(txid) &&
			metric(t, r, `litefs_db_position_replica{db="db",replica=""}`) == fmt.Sprint(txid) &&
			metric(t, r, "litefs_lag_seconds") == "0"
	})

	// Only the holder releases it.
	if code, body := httpDo(t, "DELETE", r.URL+"/api/v1/dbs/db/halt?id=0123456789abcdef", ""); code != 403 {
		t.Fatalf("DELETE with another id: %d %s", code, body)
	}
	if code, body := httpDo(t, "DELETE", r.URL+"/api/v1/dbs/db/halt?id="+h.ID, ""); code != 200 {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	python(t, insert, p.Path("db"), "1", "5")
	if v := metric(t, p, `litefs_halt_lock_active{db="db"}`); v != "0" {
		t.Fatalf("litefs_halt_lock_active after release = %q", v)
	}
	if code, body := httpDo(t, "DELETE", r.URL+"/api/v1/dbs/db/halt?id="+h.ID, ""); code != 404 {
		t.Fatalf("DELETE again: %d %s", code, body)
	}
}

func TestHalt_ExpiryAndTurns(t *testing.T) {
	insert := readTestdata(t, "halt_insert.py") // inserts rows halt-0, halt-1, ...
	p, rs := startCluster(t, 2, "")
	r1, r2 := rs[0], rs[1]
	insertRows(t, p.Path("db"), 1)
	waitCaughtUp(t, "db", p, r1, r2)

	// A lock that is not released expires, on both nodes.
	acquireHTTP(t, r1, "db", "?ttl=1s")
	waitFor(t, 10*time.Second, "the halt lock to expire", func() bool {
		return metric(t, p, `litefs_halt_lock_active{db="db"}`) == "0" && metric(t, r1, `litefs_halt_lock_active{db="db"}`) == "0"
	})
	python(t, insert, p.Path("db"), "1", "5")
	if out, err := pythonErr(insert, r1.Path("db"), "1"); err == nil || !strings.Contains(out, "readonly") {
		t.Fatalf("a replica write after its lock expired: %v\n%s", err, out)
	}

	// Concurrent requests wait their turn.
	first := acquireHTTP(t, r1, "db", "?ttl=30s")
	type result struct {
		h    haltJSON
		when time.Time
	}
	second := make(chan result, 1)
	go func() {
		code, body := httpDo(t, "POST", r2.URL+"/api/v1/dbs/db/halt?wait=20s", "")
		var h haltJSON
		if code == 200 {
			_ = json.Unmarshal([]byte(body), &h)
		} else {
			h.Holder = fmt.Sprintf("failed: %d %s", code, body)
		}
		second <- result{h, time.Now()}
	}()
	time.Sleep(500 * time.Millisecond)
	select {
	case res := <-second:
		t.Fatalf("the second request did not wait for the first lock: %+v", res.h)
	default:
	}
	released := time.Now()
	if code, body := httpDo(t, "DELETE", r1.URL+"/api/v1/dbs/db/halt?id="+first.ID, ""); code != 200 {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	res := <-second
	if res.h.Holder != r2.Hostname || res.when.Before(released) {
		t.Fatalf("the second request: %+v", res.h)
	}
	// The second holder writes through its replica.
	if out, err := pythonErr(insert, r2.Path("db"), "3"); err != nil {
		t.Fatalf("write under the second lock: %v\n%s", err, out)
	}
	if got := countAndCheck(t, p, "db"); got != "5\nok" {
		t.Fatalf("primary: %q, want 5 rows", got)
	}
	httpDo(t, "DELETE", r2.URL+"/api/v1/dbs/db/halt?id="+res.h.ID, "")

	// A client on the primary takes the lock there: the primary's own
	// writers go on, the replicas wait their turn.
	local := acquireHTTP(t, p, "db", "")
	if local.Holder != "node1" {
		t.Fatalf("a lock taken on the primary: holder %q", local.Holder)
	}
	python(t, insert, p.Path("db"), "1", "5")
	if code, body := httpDo(t, "POST", r1.URL+"/api/v1/dbs/db/halt?wait=200ms", ""); code != 409 || !strings.Contains(body, "node1") {
		t.Fatalf("a replica's request while the primary's client holds the lock: %d %s", code, body)
	}
	if code, body := httpDo(t, "DELETE", p.URL+"/api/v1/dbs/db/halt?id="+local.ID, ""); code != 200 {
		t.Fatalf("DELETE on the primary: %d %s", code, body)
	}

	// A request that waits too long is told who holds the lock.
	held := acquireHTTP(t, r1, "db", "")
	code, body := httpDo(t, "POST", r2.URL+"/api/v1/dbs/db/halt?wait=300ms", "")
	if code != 409 || !strings.Contains(body, r1.Hostname) {
		t.Fatalf("a request that waited out its wait: %d %s", code, body)
	}
	httpDo(t, "DELETE", r1.URL+"/api/v1/dbs/db/halt?id="+held.ID, "")
}

func TestHalt_BadInput(t *testing.T) {
	p, rs := startCluster(t, 1, "")
	r := rs[0]
	insertRows(t, p.Path("db"), 1)
	waitCaughtUp(t, "db", p, r)
	for _, c := range []struct {
		method, path, body string
		code               int
		says               string
	}{
		{"POST", "/api/v1/dbs/nope/halt", "", 404, "nope"},
		{"POST", "/api/v1/dbs/..%2Fx/halt", "", 400, "name"},
		{"POST", "/api/v1/dbs/db-wal/halt", "", 400, "-wal"},
		{"POST", "/api/v1/dbs/db/halt?ttl=abc", "", 400, "duration"},
		{"POST", "/api/v1/dbs/db/halt?ttl=-1s", "", 400, "ttl"},
		{"POST", "/api/v1/dbs/db/halt?ttl=1h", "", 400, "ttl"},
		{"POST", "/api/v1/dbs/db/halt", "{not json", 400, "JSON"},
		{"POST", "/api/v1/dbs/db/halt", `{"ttl": "` + strings.Repeat("9", 70<<10) + `"}`, 413, "bytes"},
		{"DELETE", "/api/v1/dbs/db/halt", "", 400, "id"},
		{"DELETE", "/api/v1/dbs/db/halt?id=abc", "", 404, "no halt lock"},
		{"GET", "/api/v1/dbs/nope", "", 404, "nope"},
	} {
		for _, n := range []*Node{p, r} {
			code, body := httpDo(t, c.method, n.URL+c.path, c.body)
			if code != c.code || !strings.Contains(body, c.says) || !strings.Contains(body, `"error"`) {
				t.Errorf("%s %s on %s: %d %s; want %d saying %q", c.method, c.path, n.URL, code, body, c.code, c.says)
			}
		}
	}
	// Nothing changed, and both nodes still serve.
	waitCaughtUp(t, "db", p, r)
	if got := countAndCheck(t, r, "db"); got != "1\nok" {
		t.Fatalf("replica: %q", got)
	}
}
