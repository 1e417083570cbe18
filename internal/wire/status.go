package wire

import (
	"context"
	"errors"
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pagewire/pagewire"
)

// ToStatus maps a domain error to a gRPC status error carrying
// google.rpc.ErrorInfo, so that FromStatus can map it back. It is the only
// place the server chooses status codes.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}

	// Map the domain error to a gRPC code.
	var code codes.Code
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, pagewire.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, pagewire.ErrInvalidName), errors.Is(err, pagewire.ErrInvalidArgument):
		code = codes.InvalidArgument
	case errors.Is(err, pagewire.ErrReadOnly), errors.Is(err, pagewire.ErrNotWAL),
		errors.Is(err, pagewire.ErrStale), errors.Is(err, pagewire.ErrBusy), errors.Is(err, pagewire.ErrMounted):
		code = codes.FailedPrecondition
	case errors.Is(err, pagewire.ErrCorrupt):
		code = codes.DataLoss
	case errors.Is(err, pagewire.ErrNotHolder):
		code = codes.PermissionDenied
	case errors.Is(err, pagewire.ErrTooMany):
		code = codes.ResourceExhausted
	default:
		return status.Error(codes.Internal, err.Error())
	}

	// The details carry the error's reason and, from a read-only node, the
	// primary; from a mounted server, its mount.
	info := &errdetails.ErrorInfo{Reason: pagewire.ReasonOf(err), Domain: pagewire.ErrorDomain}
	var ro *pagewire.ReadOnlyError
	var me *pagewire.MountedError
	switch {
	case errors.As(err, &ro):
		info.Metadata = map[string]string{"primary": ro.Primary, "advertise_url": ro.AdvertiseURL}
	case errors.As(err, &me):
		info.Metadata = map[string]string{"hostname": me.Hostname, "pid": strconv.Itoa(me.PID), "dir": me.Dir}
	}
	st, derr := status.New(code, err.Error()).WithDetails(info)
	if derr != nil {
		return status.Error(code, err.Error())
	}
	return st.Err()
}
