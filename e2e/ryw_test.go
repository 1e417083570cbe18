//go:build integration

package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pagewire/pagewire"
	client "github.com/pagewire/pagewire/clients/go"
)

// Read-your-writes for any client: the TXID a write got on the primary,
// read from its -pos file, is waited for on a replica with
// WaitForPosition; the write is then visible there, every time.
func TestReadYourWrites_WaitForPosition(t *testing.T) {
	p, rs := startCluster(t, 1, "")
	r := rs[0]
	conn, err := client.Dial(r.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()

	// The database does not exist on the replica yet: the wait covers its
	// creation too.
	insertRows(t, p.Path("ryw.db"), 1)
	for round := 2; round <= 20; round++ {
		insertRows(t, p.Path("ryw.db"), 1)
		txid := posTXID(t, p.Pos("ryw.db"))
		got, err := client.WaitForPosition(ctx, conn, "ryw.db", txid, 10*time.Second)
		if err != nil || got.TXID < txid {
			t.Fatalf("round %d: WaitForPosition(%s) = %v, %v", round, txid, got, err)
		}
		if n := countAndCheck(t, r, "ryw.db"); n != fmt.Sprintf("%d\nok", round) {
			t.Fatalf("round %d: the replica has %q after waiting for TXID %s", round, n, txid)
		}
	}

	// A TXID the primary never wrote: the wait ends, saying how far the
	// replica got.
	_, err = client.WaitForPosition(ctx, conn, "ryw.db", 1_000_000, 200*time.Millisecond)
	if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "is at TXID") {
		t.Fatalf("waiting for a TXID never written: %v, want DeadlineExceeded saying where the replica is", err)
	}
}

// posTXID is the TXID half of a -pos file's content.
func posTXID(t *testing.T, pos string) pagewire.TXID {
	t.Helper()
	v, err := strconv.ParseUint(strings.SplitN(pos, "/", 2)[0], 16, 64)
	if err != nil {
		t.Fatalf("-pos %q: %v", pos, err)
	}
	return pagewire.TXID(v)
}
