// Package static is LiteFS's static lease: one configured node is always
// the primary, at epoch 1, and the lease never moves.
//
// It imports only the standard library, pagewire and leaser.
package static
