// Package safego keeps a panic in one of a node's goroutines from taking
// the process down, or from leaving it half-alive with that goroutine gone.
//
// Call runs a function and turns its panic into a *PanicError, logged once
// with its stack; the code that started the goroutine then decides what the
// failure means: a request fails, a per-connection goroutine drops its
// connection, and a long-running loop makes its part's Run return the
// error, so that the node's supervisor (cmd/pagewire's errgroup) stops the
// node cleanly instead of running on without the loop. Recovered logs a
// panic that another mechanism already recovered (gRPC's recovery
// interceptor, go-fuse's PanicHandler) the same way.
//
// Every recovered panic is logged at error level with the attribute
// logkey.Panic: a recovered panic is still a bug, and tests fail on it by
// watching for that attribute.
//
// It imports only the standard library and internal/logkey.
package safego
