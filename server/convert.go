package server

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pagewire/pagewire"
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

func fileInfoToProto(fi FileInfo) *storagev1.FileInfo {
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

func databaseToProto(di DatabaseInfo) *adminv1.Database {
	return &adminv1.Database{
		Name:        di.Name,
		Txid:        uint64(di.Pos.TXID),
		Checksum:    di.Pos.Checksum,
		PageSize:    di.PageSize,
		PageCount:   di.PageCount,
		OpenHandles: int32(di.OpenHandles),
	}
}

func verifyReportToProto(r VerifyReport) *adminv1.VerifyDatabaseResponse {
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

func fileChangeToProto(c FileChange) *storagev1.FileChange {
	return &storagev1.FileChange{Name: c.Name, FileId: c.ID, Entry: c.Entry, Offset: c.Offset, Length: c.Length}
}

func posToProto(p pagewire.Pos) *replicationv1.Position {
	return &replicationv1.Position{Txid: uint64(p.TXID), Checksum: p.Checksum}
}

// maxMessagePages bounds the bytes of pages in one stream message.
const maxMessageBytes = 4 << 20

// txnToProto converts a transaction to one message, or several with
// more set when its pages exceed maxMessageBytes.
func txnToProto(t pagewire.Txn) []*replicationv1.Transaction {
	perMsg := max(1, maxMessageBytes/int(t.PageSize))
	var out []*replicationv1.Transaction
	for start := 0; start < len(t.Pages) || start == 0; start += perMsg {
		end := min(start+perMsg, len(t.Pages))
		pages := make([]*replicationv1.Page, 0, end-start)
		for _, p := range t.Pages[start:end] {
			pages = append(pages, &replicationv1.Page{Pgno: p.Pgno, Data: p.Data})
		}
		out = append(out, &replicationv1.Transaction{Txid: uint64(t.TXID), PreChecksum: t.PreChecksum, PostChecksum: t.PostChecksum,
			PageCount: t.PageCount, PageSize: t.PageSize, CommitTime: timestamppb.New(t.CommitTime), Pages: pages, More: end < len(t.Pages)})
		if end == len(t.Pages) {
			break
		}
	}
	return out
}

// txnsToProto makes one message of small transactions: a lone one as a
// transaction event, several as a transactions event.
func txnsToProto(txns []pagewire.Txn) *replicationv1.StreamTransactionsResponse {
	if len(txns) == 1 {
		return &replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_Transaction{Transaction: txnToProto(txns[0])[0]}}
	}
	msg := &replicationv1.Transactions{Transactions: make([]*replicationv1.Transaction, 0, len(txns))}
	for _, t := range txns {
		msg.Transactions = append(msg.Transactions, txnToProto(t)[0])
	}
	return &replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_Transactions{Transactions: msg}}
}

func haltLockFromProto(l *replicationv1.HaltLock) haltLock {
	return haltLock{ID: l.GetId(), TXID: pagewire.TXID(l.GetTxid()), Expires: l.GetExpires().AsTime(), Holder: l.GetHolder()}
}

func haltLockToProto(l haltLock) *replicationv1.HaltLock {
	return &replicationv1.HaltLock{Id: l.ID, Txid: uint64(l.TXID), Expires: timestamppb.New(l.Expires), Holder: l.Holder}
}

// adminHaltLockToProto converts a lock for AdminService; withID is false
// when it is shown to anyone but its holder.
func adminHaltLockToProto(l haltLock, withID bool) *replicationv1.HaltLock {
	out := &replicationv1.HaltLock{Txid: uint64(l.TXID), Expires: timestamppb.New(l.Expires), Holder: l.Holder}
	if withID {
		out.Id = l.ID
	}
	return out
}
