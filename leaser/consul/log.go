package consul

// Log keys only this package uses; the shared ones are in internal/logkey.
const (
	logKeyKey     = "key"     // a Consul KV key
	logKeySession = "session" // a Consul session ID
	logKeyLostIn  = "lost_in" // how long until an unrenewed lease counts as lost
	logKeyCheck   = "check"   // a Consul check ID
)
