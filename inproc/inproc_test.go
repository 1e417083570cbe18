package inproc_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/pagewire/pagewire/inproc"
)

func newHealth(t *testing.T) (*health.Server, healthgrpc.HealthClient) {
	t.Helper()
	ch := inproc.New(nil)
	hs := health.NewServer()
	healthgrpc.RegisterHealthServer(ch, hs)
	t.Cleanup(hs.Shutdown)
	return hs, healthgrpc.NewHealthClient(ch)
}

func TestChannel_Unary(t *testing.T) {
	hs, c := newHealth(t)
	hs.SetServingStatus("svc", healthgrpc.HealthCheckResponse_SERVING)
	resp, err := c.Check(context.Background(), &healthgrpc.HealthCheckRequest{Service: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetStatus(); got != healthgrpc.HealthCheckResponse_SERVING {
		t.Fatalf("status=%v, want SERVING", got)
	}
	_, err = c.Check(context.Background(), &healthgrpc.HealthCheckRequest{Service: "nosuch"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("err=%v, want NotFound", err)
	}
}

func TestChannel_UnknownMethod(t *testing.T) {
	c := healthgrpc.NewHealthClient(inproc.New(nil))
	if _, err := c.Check(context.Background(), &healthgrpc.HealthCheckRequest{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("err=%v, want Unimplemented", err)
	}
}

func TestChannel_ServerStream(t *testing.T) {
	hs, c := newHealth(t)
	hs.SetServingStatus("svc", healthgrpc.HealthCheckResponse_NOT_SERVING)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := c.Watch(ctx, &healthgrpc.HealthCheckRequest{Service: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetStatus() != healthgrpc.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("first=%v err=%v", first, err)
	}
	hs.SetServingStatus("svc", healthgrpc.HealthCheckResponse_SERVING)
	second, err := stream.Recv()
	if err != nil || second.GetStatus() != healthgrpc.HealthCheckResponse_SERVING {
		t.Fatalf("second=%v err=%v", second, err)
	}
	// Shutdown makes Watch return; the client sees the end of the stream
	// or the last status.
	cancel()
	for {
		if _, err := stream.Recv(); err != nil {
			if !errors.Is(err, io.EOF) && status.Code(err) != codes.Canceled {
				t.Fatalf("end of stream err=%v", err)
			}
			return
		}
	}
}
