// Package config loads and validates a node's configuration: litefs.yml
// compatible, with pagewire's own keys under replication, backup and auth
// (DESIGN §4).
//
// Parse expands environment variables in the raw text (Expand), decodes the
// YAML strictly over Default, so that keys left out keep their defaults, and
// validates the result. Every problem is reported as an *Error that names the
// dotted key (e.g. "lease.consul.url") and, when the value came from a file,
// the file and line, and says what to do. Find implements the lookup order of
// `pagewire mount` when -config is absent (DESIGN §3).
//
// It imports only the standard library and yaml.
package config
