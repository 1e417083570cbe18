package server_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/engine"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
	"github.com/pagewire/pagewire/replicator/upstream"
	"github.com/pagewire/pagewire/server"
)

// positionReplica reads litefs_db_position_replica{db, replica} from reg;
// ok is false without such a series.
func positionReplica(t *testing.T, reg *prometheus.Registry, db, replica string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "litefs_db_position_replica" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["db"] == db && labels["replica"] == replica {
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

// A replica's acknowledgements are what the primary reports of it: in
// GetDatabase and litefs_db_position_replica{replica}, while the stream is
// open.
func TestReplicationService_AcknowledgementsAreTheReplicasPositions(t *testing.T) {
	reg := prometheus.NewRegistry()
	conn, _, store := startServerWith(t, func(c *server.Config) { c.Registry = reg })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := store.Create("app.db", engine.App); err != nil {
		t.Fatal(err)
	}
	before, _ := store.Position("app.db")
	if err := commitTestTransaction(store, "app.db"); err != nil {
		t.Fatal(err)
	}
	syncWAL(t, store, "app.db")
	pos, _ := store.Position("app.db")

	acks, err := upstream.New(conn).AcknowledgeTransactions(ctx, "app.db", "r1")
	if err != nil {
		t.Fatal(err)
	}
	defer acks.Close()
	admin := adminv1.NewAdminServiceClient(conn)
	for _, p := range []pagewire.Pos{before, pos} {
		if err := acks.Send(1, p, true); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool {
			resp, err := admin.GetDatabase(ctx, &adminv1.GetDatabaseRequest{Name: "app.db"})
			if err != nil {
				t.Fatal(err)
			}
			rs := resp.GetReplicas()
			return len(rs) == 1 && rs[0].GetHostname() == "r1" && rs[0].GetTxid() == uint64(p.TXID)
		})
		if got, ok := positionReplica(t, reg, "app.db", "r1"); !ok || got != float64(p.TXID) {
			t.Fatalf("litefs_db_position_replica{replica=r1}=%v (present: %v), want %d", got, ok, p.TXID)
		}
	}
	if got, ok := positionReplica(t, reg, "app.db", ""); !ok || got != float64(pos.TXID) {
		t.Fatalf("litefs_db_position_replica{replica=\"\"}=%v, want this node's TXID %d", got, pos.TXID)
	}
}

// Acknowledgements that cannot be true end the stream with the code that
// says why, and are not recorded.
func TestReplicationService_AcknowledgeRefusesHostileInput(t *testing.T) {
	conn, _, store := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := store.Create("app.db", engine.App); err != nil {
		t.Fatal(err)
	}
	pos, _ := store.Position("app.db")
	c := replicationv1.NewReplicationServiceClient(conn)
	req := func(name string, epoch, txid uint64) *replicationv1.AcknowledgeTransactionsRequest {
		return &replicationv1.AcknowledgeTransactionsRequest{Name: name, Hostname: "r1", Epoch: epoch,
			Position: &replicationv1.Position{Txid: txid, Checksum: pos.Checksum}, Durable: true}
	}
	for _, tc := range []struct {
		name string
		msgs []*replicationv1.AcknowledgeTransactionsRequest
		code codes.Code
		msg  string
	}{
		{"older epoch", []*replicationv1.AcknowledgeTransactionsRequest{req("app.db", 0, 1)}, codes.FailedPrecondition, "lease epoch 0"},
		{"newer epoch", []*replicationv1.AcknowledgeTransactionsRequest{req("app.db", 9, 1)}, codes.FailedPrecondition, "lease epoch 9"},
		{"unknown database", []*replicationv1.AcknowledgeTransactionsRequest{req("nosuch.db", 1, 1)}, codes.NotFound, "nosuch.db"},
		{"bad name", []*replicationv1.AcknowledgeTransactionsRequest{req("../x", 1, 1)}, codes.InvalidArgument, ""},
		{"a TXID not sent", []*replicationv1.AcknowledgeTransactionsRequest{req("app.db", 1, 2)}, codes.InvalidArgument, "has sent up to 1"},
		{"an absurd TXID", []*replicationv1.AcknowledgeTransactionsRequest{req("app.db", 1, 1<<64-1)}, codes.InvalidArgument, "has sent up to 1"},
		{"another database mid-stream", []*replicationv1.AcknowledgeTransactionsRequest{req("app.db", 1, 1), req("other.db", 1, 1)}, codes.InvalidArgument, "same database and replica"},
		{"oversized", []*replicationv1.AcknowledgeTransactionsRequest{{Name: "app.db", Hostname: strings.Repeat("h", 100<<10), Epoch: 1}}, codes.ResourceExhausted, "this method takes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := c.AcknowledgeTransactions(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tc.msgs {
				if err = s.Send(m); err != nil {
					break
				}
			}
			_, err = s.CloseAndRecv()
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err=%v, want %s with %q", err, tc.code, tc.msg)
			}
			if tc.code != codes.InvalidArgument || tc.name != "another database mid-stream" {
				for _, rp := range store.ReplicaPositions("app.db") {
					t.Errorf("a refused acknowledgement was recorded: %+v", rp)
				}
			}
		})
	}

	// Through the replicator's end the same errors come back as sentinels.
	acks, err := upstream.New(conn).AcknowledgeTransactions(ctx, "app.db", "r1")
	if err != nil {
		t.Fatal(err)
	}
	defer acks.Close()
	err = acks.Send(1, pagewire.Pos{TXID: 5}, true)
	for i := 0; err == nil && i < 100; i++ { // the refusal may come a send later
		time.Sleep(10 * time.Millisecond)
		err = acks.Send(1, pagewire.Pos{TXID: 5}, true)
	}
	if !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("err=%v, want ErrInvalidArgument", err)
	}
}

// syncWAL fsyncs db's WAL, as SQLite does after a commit under FULL.
func syncWAL(t *testing.T, store *engine.Store, db string) {
	t.Helper()
	fi, err := store.Lookup(db + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Sync(fi.ID, engine.App); err != nil {
		t.Fatal(err)
	}
}
