package inproc

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Channel is both ends of an in-process connection. Register services on it
// before the first call; it is safe for concurrent calls after that.
type Channel struct {
	interceptor grpc.UnaryServerInterceptor
	methods     map[string]method // "/pkg.Service/Method"
	streams     map[string]stream
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

// New returns a channel whose calls pass through interceptor (nil: none).
func New(interceptor grpc.UnaryServerInterceptor) *Channel {
	return &Channel{interceptor: interceptor, methods: map[string]method{}, streams: map[string]stream{}}
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
func (c *Channel) Invoke(ctx context.Context, name string, args, reply any, _ ...grpc.CallOption) error {
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
	out, err := m.handler(m.impl, ctx, dec, c.interceptor)
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
