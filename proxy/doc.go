// Package proxy is the HTTP proxy that runs in front of the user's app on
// every node (DESIGN §6, LiteFS's proxy.* settings).
//
// On the primary it passes every request to the app and marks the response
// to each write with a __txid cookie: the database's TXID after the write.
// On a replica it serves GET and HEAD from the local app, first waiting until
// the replica has caught up with a __txid the request carries, and sends
// every other request to the primary's proxy (or, on Fly.io, asks Fly to
// replay it there with fly-replay).
//
// The app learns the client from X-Forwarded-For, -Host and -Proto. The
// proxy keeps those a trusted hop set (Config.TrustedProxies, or a replica's
// proxy forwarding a write, see PeerNode) and replaces a client's own.
//
// It may import the root pagewire package, internal/logkey and the standard
// library only; it learns about the node through the small Node interface it
// declares.
package proxy
