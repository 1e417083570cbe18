// Package consultest runs a real Consul agent (consul agent -dev) on
// loopback for tests. The agent is the Consul 1.14.11 binary that
// deploy/consul builds: `make consul` puts it at DefaultPath; CONSUL_BIN
// overrides.
//
// It is for tests only, and imports the standard library and
// internal/syncbuf; tests reach the agent through its URL with whatever
// client they test.
package consultest
