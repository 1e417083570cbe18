// Package consul is the lease held as a Consul session lock, laid out as
// LiteFS lays it out: the holder's {hostname, advertise-url} as JSON at
// the key, a cluster ID at <key>/clusterid, and (pagewire's own) the
// candidates' positions under <key>/positions/. Leaser implements
// leaser.Leaser and leaser.Board.
//
// It may import leaser, pagewire, internal packages and Consul's api
// client; it is the only package of a node that talks to Consul.
package consul
