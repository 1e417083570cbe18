package main

// Structured log keys.
const (
	logKeyAddr     = "addr"
	logKeyDB       = "db"
	logKeyError    = "error"
	logKeyMethod   = "method"
	logKeyPath     = "path"
	logKeyStatus   = "status"
	logKeyDuration = "duration"
	logKeyOp       = "op"
)
