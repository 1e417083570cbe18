package client

import "github.com/pagewire/pagewire/internal/wire"

// Error maps an error returned by a pagewire gRPC call back to a domain
// error, so that errors.Is(err, pagewire.ErrReadOnly) and friends work. An
// error without pagewire's ErrorInfo is returned unchanged.
func Error(err error) error { return wire.FromStatus(err) }
