// Package s3test runs a real S3 server on loopback for tests: SeaweedFS's
// `weed mini` (master, volume server, filer and S3 gateway in one process),
// holding its data in the test's temporary folder and accepting one static
// access key, so every request must be signed. The binary is the one
// deploy/seaweedfs builds: `make seaweedfs` puts it at DefaultPath;
// WEED_BIN overrides.
//
// Start returns a Server with one bucket, and stops it when the test ends,
// pass or fail. Tests simulate an outage with Stop (requests fail) and
// Restart (the same data on the same endpoint). If the test binary itself
// dies (a -timeout panic, a SIGKILL), the kernel kills weed with it, but its
// folder and its Unix sockets in /tmp stay behind.
//
// StartIn is Start outside a test, in a folder the caller gives, for the
// bench's backup section, which measures uploads to and restores from it.
//
// It is for tests and the bench only, and imports the standard library
// only; tests reach the server through Endpoint (or BucketURL, for
// gocloud.dev/blob) with the S3 client they test, and hand child processes
// its credentials with Env.
package s3test
