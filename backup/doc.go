// Package backup keeps databases' backups in object storage (a directory,
// S3 or an S3-compatible store, GCS, Azure, through gocloud.dev/blob) and
// restores them to any transaction or time they hold.
//
// Objects are LTX files (the format of LiteFS and Litestream, through
// github.com/superfly/ltx): snapshots, packs of one LTX file per
// transaction, and compacted levels. layout.go says how they are named and
// how a deposed primary's uploads are fenced off; restore.go how a restore
// is planned and verified: every object must start at the checksum the one
// before ended at and end at the one it records, before the restored file
// replaces anything.
//
// compact.go merges uploads into compacted levels (Compact) and deletes
// what no restore within the retention needs (Prune).
//
// This build has the format, the restore, the listing, Compact and Prune;
// the uploader that runs on the primary, which would call them, is not
// wired yet (issue 16).
package backup
