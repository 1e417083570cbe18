package server

// Structured log keys.
const (
	logKeyDB    = "db"
	logKeyTXID  = "txid"
	logKeyError = "error"
	logKeyFile  = "file"
)
