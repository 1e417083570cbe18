// Package logkey names the structured log attributes every package of a
// node uses, so that one grep or one log query finds a database, a TXID or
// an error whichever part logged it.
package logkey
