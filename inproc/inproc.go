package inproc

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Config configures a Channel.
type Config struct {
	// Unary and Stream wrap every unary call and every stream, as a
	// grpc.Server's chained interceptors do (nil: none). A server's
	// include panic recovery, as its network server's do.
	Unary  grpc.UnaryServerInterceptor
	Stream grpc.StreamServerInterceptor
	// Logger logs a panic that got past the interceptors, with its stack;
	// the call fails with codes.Internal (nil: slog.Default()).
	Logger *slog.Logger
}

// Channel is both ends of an in-process connection. Register services on it
// before the first call; it is safe for concurrent calls after that.
//
// A handler that panics fails its call with codes.Internal: its
// interceptors should recover it (and count and log it); the channel
// recovers what gets past them, so that a panic never takes the process
// down, even in a stream's goroutine, which no caller's recover covers.
type Channel struct {
	cfg     Config
	methods map[string]method // "/pkg.Service/Method"
	streams map[string]stream
}

type stream struct {
	impl    any
	handler grpc.StreamHandler
}

type method struct {
	impl    any
	handler grpc.MethodHandler
}

var (
	_ grpc.ServiceRegistrar    = (*Channel)(nil)
	_ grpc.ClientConnInterface = (*Channel)(nil)
)

// New returns a channel whose calls pass through cfg's interceptors.
func New(cfg Config) *Channel {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Channel{cfg: cfg, methods: map[string]method{}, streams: map[string]stream{}}
}

// recovered turns p, a panic just recovered from the call name, into
// codes.Internal, logged with the stack. The log keys are
// internal/logkey's Task, Panic and Stack (this package imports nothing of
// pagewire).
func (c *Channel) recovered(name string, p any) error {
	c.cfg.Logger.Error("recovered a panic in an in-process gRPC call: this is a bug; please report it with this stack",
		"task", strings.TrimPrefix(name, "/"), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	return status.Errorf(codes.Internal, "internal error in %s: %v", strings.TrimPrefix(name, "/"), p)
}

// RegisterService registers a service's methods and streams.
func (c *Channel) RegisterService(desc *grpc.ServiceDesc, impl any) {
	for _, m := range desc.Methods {
		c.methods["/"+desc.ServiceName+"/"+m.MethodName] = method{impl: impl, handler: m.Handler}
	}
	for _, s := range desc.Streams {
		c.streams["/"+desc.ServiceName+"/"+s.StreamName] = stream{impl: impl, handler: s.Handler}
	}
}

// Invoke calls a unary method.
func (c *Channel) Invoke(ctx context.Context, name string, args, reply any, _ ...grpc.CallOption) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = c.recovered(name, p)
		}
	}()
	m, ok := c.methods[name]
	if !ok {
		return status.Errorf(codes.Unimplemented, "method %s is not registered on the in-process channel", strings.TrimPrefix(name, "/"))
	}
	in, ok := args.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "request %T is not a proto message", args)
	}
	dec := func(v any) error {
		proto.Merge(v.(proto.Message), in)
		return nil
	}
	out, err := m.handler(m.impl, ctx, dec, c.cfg.Unary)
	if err != nil {
		if _, ok := status.FromError(err); !ok {
			err = status.Error(codes.Unknown, err.Error())
		}
		return err
	}
	r, ok := reply.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "reply %T is not a proto message", reply)
	}
	proto.Reset(r)
	proto.Merge(r, out.(proto.Message))
	return nil
}
