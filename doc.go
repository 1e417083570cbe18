// Package pagewire holds the vocabulary every part of pagewire shares: TXIDs,
// positions, roles, file names on the mount, and the errors that cross the
// wire. It imports only the standard library.
//
// The components live in their own packages: server (the storage server),
// fusemount (the FUSE filesystem), config (litefs.yml), and cmd/pagewire.
package pagewire
