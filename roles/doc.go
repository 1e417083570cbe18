// Package roles runs a node's role from its lease at run time: a candidate
// takes the lease when it is free and becomes the primary; every other
// node follows whoever holds it, and follows the next holder when it
// changes. A primary that loses its lease stops taking writes at once.
//
// Manager.Run is a loop over the lease's states, one method each:
// followPrimary while a node holds it, contend while it is free (mayLead
// compares positions with the other candidates, takeLease takes it), lead
// while this node holds it.
//
// It may import pagewire, leaser (the seam, never a backend) and internal
// packages; the store and the follower come in as interfaces.
package roles
