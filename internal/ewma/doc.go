// Package ewma measures an event rate as an exponentially weighted moving
// average, so that a burst after a short stall does not look like a busy
// period while a sustained rate does.
//
// It imports only the standard library.
package ewma
