// Package syncbuf is a bytes.Buffer that a child process's output can be
// written to while a test reads it.
//
// It imports only the standard library.
package syncbuf
