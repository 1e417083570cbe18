package wire

import (
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"

	"github.com/pagewire/pagewire"
)

// FromStatus maps an error returned by a pagewire gRPC call back to a domain
// error, so that errors.Is(err, pagewire.ErrReadOnly) and friends work. An
// error without pagewire's ErrorInfo is returned unchanged.
func FromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetDomain() != pagewire.ErrorDomain {
			continue
		}
		if info.GetReason() == pagewire.ReasonReadOnly {
			return &remoteReadOnly{ReadOnlyError: pagewire.ReadOnlyError{
				Primary: info.GetMetadata()["primary"], AdvertiseURL: info.GetMetadata()["advertise_url"]}, msg: st.Message()}
		}
		if info.GetReason() == pagewire.ReasonMounted {
			md := info.GetMetadata()
			pid, _ := strconv.Atoi(md["pid"])
			return &pagewire.MountedError{Hostname: md["hostname"], PID: pid, Dir: md["dir"]}
		}
		if sentinel := pagewire.ErrorOf(info.GetReason()); sentinel != nil {
			return &remoteError{sentinel: sentinel, msg: st.Message()}
		}
	}
	return err
}

// remoteError is a domain error that came over the wire.
type remoteError struct {
	sentinel error
	msg      string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

type remoteReadOnly struct {
	pagewire.ReadOnlyError
	msg string
}

func (e *remoteReadOnly) Error() string { return e.msg }
func (e *remoteReadOnly) Unwrap() error { return &e.ReadOnlyError }
