package inproc_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/pagewire/pagewire/inproc"
	"github.com/pagewire/pagewire/internal/syncbuf"
)

func newHealth(t *testing.T) (*health.Server, healthgrpc.HealthClient) {
	t.Helper()
	ch := inproc.New(inproc.Config{})
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
	c := healthgrpc.NewHealthClient(inproc.New(inproc.Config{}))
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

// panicky is a health service whose every call panics.
type panicky struct {
	healthgrpc.UnimplementedHealthServer
}

func (panicky) Check(context.Context, *healthgrpc.HealthCheckRequest) (*healthgrpc.HealthCheckResponse, error) {
	panic("check exploded")
}

func (panicky) Watch(*healthgrpc.HealthCheckRequest, healthgrpc.Health_WatchServer) error {
	var p *healthgrpc.HealthCheckRequest
	_ = p.Service // nil dereference
	return nil
}

// A panicking handler fails its call with codes.Internal and is logged
// with its stack; the process lives on. Without interceptors the channel
// recovers it itself; with them, they see it first.
func TestChannel_Panics(t *testing.T) {
	var log syncbuf.Buffer
	var unarySeen, streamSeen atomic.Bool
	for _, tc := range []struct {
		name string
		cfg  inproc.Config
	}{
		{"no interceptors", inproc.Config{}},
		{"interceptors", inproc.Config{
			Unary: func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				unarySeen.Store(info.FullMethod == "/grpc.health.v1.Health/Check")
				return h(ctx, req)
			},
			Stream: func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
				streamSeen.Store(info.FullMethod == "/grpc.health.v1.Health/Watch" && info.IsServerStream && !info.IsClientStream)
				return h(srv, ss)
			},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Logger = slog.New(slog.NewTextHandler(&log, nil))
			ch := inproc.New(cfg)
			healthgrpc.RegisterHealthServer(ch, panicky{})
			c := healthgrpc.NewHealthClient(ch)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			_, err := c.Check(ctx, &healthgrpc.HealthCheckRequest{})
			if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "check exploded") {
				t.Fatalf("unary: err=%v, want Internal with the panic", err)
			}
			stream, err := c.Watch(ctx, &healthgrpc.HealthCheckRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := stream.Recv(); status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "nil pointer") {
				t.Fatalf("stream: err=%v, want Internal with the panic", err)
			}
		})
	}
	if !unarySeen.Load() || !streamSeen.Load() {
		t.Fatalf("interceptors saw unary=%v stream=%v, want both, with the method's info", unarySeen.Load(), streamSeen.Load())
	}
	for _, want := range []string{"check exploded", "nil pointer", "inproc_test.panicky.Watch"} {
		if !strings.Contains(log.String(), want) {
			t.Fatalf("the log does not show %q:\n%s", want, log.String())
		}
	}
}
