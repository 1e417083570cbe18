// Package faultfs is a test-only FUSE passthrough filesystem that simulates
// a power cut. It is not part of the node: tests mount it and point a
// node's data.dir inside it, because this machine has no device-mapper
// (dm-flakey) to cut a real disk.
//
// Mount serves a backing directory. Every read sees every write at once,
// as with a page cache. What a power cut keeps is modelled per inode:
//
//   - A regular file's content and size are durable as of its last fsync
//     (or fdatasync) through the mount. Writes and truncations since then
//     are kept in the backing file, and the bytes they overwrote are kept in
//     memory, page by page, so that PowerCut can put them back.
//   - A directory's entries are durable as of its last fsync through the
//     mount: creates, unlinks and renames in it since then are undone by a
//     power cut. An unlinked (or renamed-over) inode that a directory still
//     names durably is kept alive under a private folder next to the
//     backing directory until the directory is fsynced without it, so that
//     PowerCut can bring it back.
//   - A file or folder created since its parent's last fsync is gone after
//     the cut; a file created and fsynced, in a folder never fsynced since,
//     is gone too. A new file whose name is durable but whose content was
//     never fsynced comes back empty.
//   - What was on the backing directory when it was mounted is durable.
//
// PowerCut unmounts, rebuilds the backing directory as that model says a
// disk holds after power loss, and mounts it again. Unmount is an orderly
// shutdown: everything written stays.
//
// What it does not model: torn writes (a write is all or nothing, and a
// 4 KiB page is never half old, half new), reordering inside what was not
// fsynced (the cut drops all of it, never a part), journaling file systems
// that make more durable than POSIX promises (ext4 commits a rename with
// everything before it; here only an fsync of each folder does), metadata
// other than names and sizes (modes, owners, times and xattrs change at
// once and stay), hard links, O_TMPFILE, fallocate and copy_file_range
// (refused with ENOTSUP), writes through a shared mmap (not tracked), and
// a cross-folder rename made durable in one folder but not the other (the
// inode then has both names, or none, after the cut). Sockets and FIFOs
// keep their names like files but have no content.
package faultfs
