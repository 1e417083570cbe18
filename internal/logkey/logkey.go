package logkey

// Keys of slog attributes. Add one here before using a new key in two
// packages.
const (
	DB        = "db"        // database name
	TXID      = "txid"      // a transaction ID, as pagewire.TXID's String
	Position  = "position"  // a replication position, as pagewire.Pos's String
	Error     = "error"     // the error that made this worth logging
	File      = "file"      // a path on disk
	Path      = "path"      // a path in a URL or mount
	Dir       = "dir"       // a directory
	Primary   = "primary"   // the primary's hostname or URL
	Epoch     = "epoch"     // a lease epoch
	Reason    = "reason"    // why a state changed
	RetryIn   = "retry_in"  // how long until the next attempt
	Pages     = "pages"     // a count of pages
	Frames    = "frames"    // a count of WAL frames
	URL       = "url"       // a URL this node reaches or serves
	Addr      = "addr"      // a listen or dial address
	Role      = "role"      // primary or replica
	Config    = "config"    // a config file path
	Component = "component" // the part of the node that logs
	Task      = "task"      // the work that was running (e.g. when a panic was recovered)
	Panic     = "panic"     // the value of a recovered panic
	Stack     = "stack"     // a goroutine's stack
)
