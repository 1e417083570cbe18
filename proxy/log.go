package proxy

// Structured log keys of the proxy's own; the shared ones are in
// internal/logkey.
const (
	logKeyMethod    = "method"
	logKeyTarget    = "target"
	logKeyLocalTXID = "local_txid"
	logKeyCookie    = "cookie"
	logKeyTimeout   = "timeout"
	logKeyFwdBy     = "forwarded_by"
)
