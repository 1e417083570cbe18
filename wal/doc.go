// Package wal is SQLite's write-ahead log file format, parsed and encoded in
// one place (SQLITE_NOTES §2–§3): the -wal file's header and frames with
// their chained checksums (Header, FrameHeader, Reader, Encoder), and the
// -shm wal-index that SQLite maps into memory (IndexHeader, CkptInfo, Block)
// with the offsets of its lock bytes.
//
// It does no locking and opens no files: the storage server reads WALs that
// SQLite writes with it, and the replicator writes WALs that SQLite reads.
// It imports only the standard library and the root package pagewire.
package wal
