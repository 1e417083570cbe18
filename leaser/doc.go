// Package leaser decides which node is the primary: the one holding the
// write lease. Leaser is the seam, Lease a held lease, and Board where
// candidates publish their positions; leaser/static (LiteFS's "static"
// lease: one configured primary) and leaser/consul (a Consul session lock,
// LiteFS's layout) implement them.
//
// Every acquisition yields a larger Epoch than any before it on the same
// lease key. Streams and applies carry it, so that whatever comes from an
// older primary is refused.
//
// It imports only the standard library and the root package pagewire, so
// that importing the seam pulls in no backend.
package leaser
