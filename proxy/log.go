package proxy

// Structured log keys.
const (
	logKeyComponent = "component"
	logKeyMethod    = "method"
	logKeyPath      = "path"
	logKeyTarget    = "target"
	logKeyPrimary   = "primary"
	logKeyDB        = "db"
	logKeyTXID      = "txid"
	logKeyLocalTXID = "local_txid"
	logKeyCookie    = "cookie"
	logKeyAddr      = "addr"
	logKeyTimeout   = "timeout"
	logKeyFwdBy     = "forwarded_by"
	logKeyError     = "error"
)
