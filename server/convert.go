package server

import (
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/engine"
	"github.com/pagewire/pagewire/internal/wire"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
)

var kindToProto = map[pagewire.FileKind]storagev1.FileKind{
	pagewire.FileDatabase: storagev1.FileKind_FILE_KIND_DATABASE,
	pagewire.FileWAL:      storagev1.FileKind_FILE_KIND_WAL,
	pagewire.FileSHM:      storagev1.FileKind_FILE_KIND_SHM,
	pagewire.FilePos:      storagev1.FileKind_FILE_KIND_POS,
	pagewire.FilePrimary:  storagev1.FileKind_FILE_KIND_PRIMARY,
}

func fileInfoToProto(fi engine.FileInfo) *storagev1.FileInfo {
	return &storagev1.FileInfo{
		Name:     fi.Name,
		FileId:   fi.ID,
		Kind:     kindToProto[fi.Kind],
		Size:     fi.Size,
		ModTime:  timestamppb.New(fi.ModTime),
		ReadOnly: fi.ReadOnly,
		Volatile: fi.Volatile,
	}
}

func databaseToProto(di engine.DatabaseInfo, backup func(string) (BackupStatus, bool)) *adminv1.Database {
	d := &adminv1.Database{
		Name:        di.Name,
		Txid:        uint64(di.Pos.TXID),
		Checksum:    di.Pos.Checksum,
		PageSize:    di.PageSize,
		PageCount:   di.PageCount,
		OpenHandles: int32(di.OpenHandles),
	}
	if b, ok := backupOf(backup, di.Name); ok {
		d.Backup = &adminv1.DatabaseBackup{Txid: uint64(b.TXID), Lag: durationpb.New(b.Lag), Error: b.Err, Segment: b.Segment}
		if !b.Time.IsZero() {
			d.Backup.Time = timestamppb.New(b.Time)
		}
	}
	return d
}

// backupOf is db's backup as f reports it, if f is set and this node
// uploads it.
func backupOf(f func(string) (BackupStatus, bool), db string) (BackupStatus, bool) {
	if f == nil {
		return BackupStatus{}, false
	}
	return f(db)
}

func verifyReportToProto(r engine.VerifyReport) *adminv1.VerifyDatabaseResponse {
	return &adminv1.VerifyDatabaseResponse{
		Ok: r.OK(), Txid: uint64(r.Pos.TXID), Checksum: r.Pos.Checksum, ContentChecksum: r.Checksum,
		PageCount: r.PageCount, BadPages: r.BadPages, BadPageCount: uint32(r.BadPageCount),
		WalProblem: r.WAL, Uncounted: uint32(r.Uncounted), Repaired: r.Repaired, Summary: r.String(),
	}
}

func roleToProto(r pagewire.Role) adminv1.Role {
	switch r {
	case pagewire.RolePrimary:
		return adminv1.Role_ROLE_PRIMARY
	case pagewire.RoleReplica:
		return adminv1.Role_ROLE_REPLICA
	}
	return adminv1.Role_ROLE_UNSPECIFIED
}

func fileChangeToProto(c engine.FileChange) *storagev1.FileChange {
	return &storagev1.FileChange{Name: c.Name, FileId: c.ID, Entry: c.Entry, Offset: c.Offset, Length: c.Length}
}

// txnsToProto makes one message of small transactions: a lone one as a
// transaction event, several as a transactions event.
func txnsToProto(txns []pagewire.Txn) *replicationv1.StreamTransactionsResponse {
	if len(txns) == 1 {
		return &replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_Transaction{Transaction: wire.TxnToProto(txns[0], false)}}
	}
	msg := &replicationv1.Transactions{Transactions: make([]*replicationv1.Transaction, 0, len(txns))}
	for _, t := range txns {
		msg.Transactions = append(msg.Transactions, wire.TxnToProto(t, false))
	}
	return &replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_Transactions{Transactions: msg}}
}
