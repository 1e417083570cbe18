// Package client is pagewire's Go client library: it maps gRPC status errors
// back to pagewire's domain errors, and dials nodes.
package client
