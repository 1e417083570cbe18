package server_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pagewire/pagewire"
	client "github.com/pagewire/pagewire/clients/go"
	"github.com/pagewire/pagewire/engine"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
	"github.com/pagewire/pagewire/wal"
)

// exportPages is the size of the exported database: several times what
// the stream's windows and the connection's buffers hold, so that a
// client that stops reading leaves the export blocked in a send.
const exportPages = 1500

// commitPages commits one transaction that writes pages 2..n of db (the
// database is then n pages long), each filled with fill, in a new WAL
// generation as SQLite would after a checkpoint.
func commitPages(s *engine.Store, db string, n uint32, fill byte, salt uint32) error {
	walFile, err := s.Create(db+"-wal", engine.App)
	if err != nil {
		return err
	}
	h := wal.Header{PageSize: 4096, Salt: wal.Salt{salt, salt + 1}}
	hdr := h.AppendTo(nil)
	enc := h.Encoder()
	if _, _, err := s.WriteAt(walFile.ID, hdr, 0, engine.App); err != nil {
		return err
	}
	page := bytes.Repeat([]byte{fill}, 4096)
	for pgno := uint32(2); pgno <= n; pgno++ {
		var commit uint32
		if pgno == n {
			commit = n
		}
		frame := enc.AppendFrame(nil, pgno, commit, page)
		if _, _, err := s.WriteAt(walFile.ID, frame, wal.FrameOffset(pgno-1, 4096), engine.App); err != nil {
			return err
		}
	}
	return nil
}

// smallWindows makes a client whose stream and connection windows stay at
// 64 KiB (no BDP growth), so that the server blocks soon after it stops
// reading.
var smallWindows = []grpc.DialOption{grpc.WithInitialWindowSize(64 << 10), grpc.WithInitialConnWindowSize(64 << 10)}

// readAll reads an export stream to its end: the file and the position.
func readAll(stream adminv1.AdminService_ExportDatabaseClient) ([]byte, pagewire.Pos, error) {
	var buf bytes.Buffer
	var pos pagewire.Pos
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return buf.Bytes(), pos, nil
		}
		if err != nil {
			return nil, pos, client.Error(err)
		}
		buf.Write(msg.GetData())
		if msg.GetTxid() != 0 {
			pos = pagewire.Pos{TXID: pagewire.TXID(msg.GetTxid()), Checksum: msg.GetChecksum()}
		}
	}
}

// A client that opens an export stream, reads one message and stops
// reading blocks no writer of the database; when it reads on, it gets the
// database at the position the export started at.
func TestAdminService_StalledExportBlocksNoWriter(t *testing.T) {
	lis, _, store := startServerOn(t, nil)
	admin := adminv1.NewAdminServiceClient(dialBufconn(t, lis, smallWindows...))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := store.Create("app.db", engine.App); err != nil {
		t.Fatal(err)
	}
	if err := commitPages(store, "app.db", exportPages, 1, 10); err != nil {
		t.Fatal(err)
	}

	// The database as it is: a whole export.
	full, err := admin.ExportDatabase(ctx, &adminv1.ExportDatabaseRequest{Name: "app.db"})
	if err != nil {
		t.Fatal(err)
	}
	want, wantPos, err := readAll(full)
	if err != nil || len(want) != exportPages*4096 {
		t.Fatalf("whole export: %d bytes, %v", len(want), err)
	}

	// A stream read for one message, then not at all.
	stalled, err := admin.ExportDatabase(ctx, &adminv1.ExportDatabaseRequest{Name: "app.db"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stalled.Recv()
	if err != nil {
		t.Fatal(err)
	}

	// Writers go on meanwhile: a whole rewrite of the database, twice, in
	// new WAL generations over the frames the export still needs. (A
	// minute without their end means they wait for the stalled client.)
	committed := make(chan error, 1)
	go func() {
		var err error
		for i, fill := range []byte{2, 3} {
			if err == nil {
				err = commitPages(store, "app.db", exportPages, fill, uint32(20+2*i))
			}
		}
		committed <- err
	}()
	select {
	case err := <-committed:
		if err != nil {
			t.Fatalf("commit while an export is stalled: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("commits did not end within a minute while an export stream was not read: the export blocks writers")
	}

	// Read on: the database where the export began.
	rest, pos, err := readAll(stalled)
	if err != nil {
		t.Fatal(err)
	}
	got := append(first.GetData(), rest...)
	if pos != wantPos || !bytes.Equal(got, want) {
		t.Fatalf("stalled export at %v, %d bytes; want %v and the %d bytes of a whole export then", pos, len(got), wantPos, len(want))
	}
}

// A node runs at most four exports at once: a fifth is RESOURCE_EXHAUSTED,
// with a message that says to retry, and changes nothing; once the
// stalled ones' clients go away, their slots are free again.
func TestAdminService_ExportsAreBounded(t *testing.T) {
	lis, _, store := startServerOn(t, nil)
	admin := adminv1.NewAdminServiceClient(dialBufconn(t, lis, smallWindows...))
	if _, err := store.Create("app.db", engine.App); err != nil {
		t.Fatal(err)
	}
	if err := commitPages(store, "app.db", exportPages, 1, 10); err != nil {
		t.Fatal(err)
	}

	// Four streams that stop reading after one message.
	stalledCtx, cancelStalled := context.WithCancel(context.Background())
	defer cancelStalled()
	for range 4 {
		s, err := admin.ExportDatabase(stalledCtx, &adminv1.ExportDatabaseRequest{Name: "app.db"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
	}

	// A fifth is refused.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := admin.ExportDatabase(ctx, &adminv1.ExportDatabaseRequest{Name: "app.db"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Recv()
	if status.Code(err) != codes.ResourceExhausted || !errors.Is(client.Error(err), pagewire.ErrTooMany) {
		t.Fatalf("fifth export: %v, want RESOURCE_EXHAUSTED (ErrTooMany)", err)
	}
	if msg := status.Convert(err).Message(); !bytes.Contains([]byte(msg), []byte("try again")) {
		t.Errorf("fifth export's message %q does not say what to do", msg)
	}

	// The stalled clients go: their exports end and free their slots.
	cancelStalled()
	waitFor(t, func() bool {
		s, err := admin.ExportDatabase(ctx, &adminv1.ExportDatabaseRequest{Name: "app.db"})
		if err != nil {
			return false
		}
		got, _, err := readAll(s)
		return err == nil && len(got) == exportPages*4096
	})
}
