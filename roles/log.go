package roles

// Log keys only this package uses; the shared ones are in internal/logkey.
const (
	logKeyLease       = "lease"        // the lease type, as in lease.type
	logKeyLastPrimary = "last_primary" // the hostname of the lease's last holder
	logKeyCandidate   = "candidate"    // another candidate's hostname
	logKeyTo          = "to"           // whom the lease is handed to
	logKeyWaited      = "waited"       // how long this node waited
	logKeyForAtMost   = "for_at_most"  // how long this node waits at most
)
