// Package tlsfiles is TLS from files on disk: a certificate and key, and a
// CA bundle, read again when they change (cert-manager and Fly rotate them
// in place), for the node's port and for the connections it and the CLI
// make to other nodes.
//
// It imports the standard library only.
package tlsfiles
