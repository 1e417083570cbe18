package inproc

import (
	"context"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// pipe carries one stream's messages between client and server goroutines.
// Messages are cloned on send, so neither side shares memory with the other.
type pipe struct {
	ctx    context.Context
	cancel context.CancelFunc
	toSrv  chan proto.Message // closed by the client's CloseSend
	toCli  chan proto.Message
	done   chan struct{} // closed when the handler returned
	// err is the handler's result; read after done is closed.
	err       error
	closeOnce sync.Once
}

// clientStream is the client end of an in-process stream.
type clientStream struct{ p *pipe }

// serverStream is the server end of an in-process stream.
type serverStream struct{ p *pipe }

var (
	_ grpc.ClientStream = clientStream{}
	_ grpc.ServerStream = serverStream{}
)

// NewStream starts a streaming method: its handler runs in its own
// goroutine, through the channel's stream interceptor, until it returns or
// ctx is done. A panic there fails the stream with codes.Internal.
func (c *Channel) NewStream(ctx context.Context, desc *grpc.StreamDesc, name string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
	s, ok := c.streams[name]
	if !ok {
		return nil, status.Errorf(codes.Unimplemented, "stream %s is not registered on the in-process channel", name)
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &pipe{ctx: ctx, cancel: cancel, toSrv: make(chan proto.Message, 1), toCli: make(chan proto.Message, 16), done: make(chan struct{})}
	info := &grpc.StreamServerInfo{FullMethod: name, IsClientStream: desc.ClientStreams, IsServerStream: desc.ServerStreams}
	go func() {
		err := c.serveStream(s, serverStream{p}, info)
		if _, ok := status.FromError(err); !ok {
			err = status.Error(codes.Unknown, err.Error())
		}
		p.err = err
		close(p.done)
	}()
	return clientStream{p}, nil
}

// serveStream runs a stream's handler through the stream interceptor, and
// recovers a panic that gets past it: nothing above this goroutine would.
func (c *Channel) serveStream(s stream, ss grpc.ServerStream, info *grpc.StreamServerInfo) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = c.recovered(info.FullMethod, p)
		}
	}()
	if c.cfg.Stream == nil {
		return s.handler(s.impl, ss)
	}
	return c.cfg.Stream(s.impl, ss, info, s.handler)
}

func send(ctx context.Context, ch chan<- proto.Message, m any) error {
	msg, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "message %T is not a proto message", m)
	}
	select {
	case ch <- proto.Clone(msg):
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

func recv(dst any, msg proto.Message) {
	d := dst.(proto.Message)
	proto.Reset(d)
	proto.Merge(d, msg)
}

func (s clientStream) Header() (metadata.MD, error) { return nil, nil }
func (s clientStream) Trailer() metadata.MD         { return nil }
func (s clientStream) Context() context.Context     { return s.p.ctx }

func (s clientStream) CloseSend() error {
	s.p.closeOnce.Do(func() { close(s.p.toSrv) })
	return nil
}

func (s clientStream) SendMsg(m any) error {
	select {
	case <-s.p.done:
		return io.EOF // as grpc: the real error comes from RecvMsg
	default:
	}
	return send(s.p.ctx, s.p.toSrv, m)
}

// RecvMsg returns the next message, then the handler's error, or io.EOF
// once the handler returned nil.
func (s clientStream) RecvMsg(m any) error {
	select {
	case msg := <-s.p.toCli:
		recv(m, msg)
		return nil
	case <-s.p.done:
		select {
		case msg := <-s.p.toCli: // sent just before the handler returned
			recv(m, msg)
			return nil
		default:
		}
		s.p.cancel()
		if s.p.err != nil {
			return s.p.err
		}
		return io.EOF
	case <-s.p.ctx.Done():
		return status.FromContextError(s.p.ctx.Err()).Err()
	}
}

func (s serverStream) SetHeader(metadata.MD) error  { return nil }
func (s serverStream) SendHeader(metadata.MD) error { return nil }
func (s serverStream) SetTrailer(metadata.MD)       {}
func (s serverStream) Context() context.Context     { return s.p.ctx }
func (s serverStream) SendMsg(m any) error          { return send(s.p.ctx, s.p.toCli, m) }

func (s serverStream) RecvMsg(m any) error {
	select {
	case msg, ok := <-s.p.toSrv:
		if !ok {
			return io.EOF
		}
		recv(m, msg)
		return nil
	case <-s.p.ctx.Done():
		return status.FromContextError(s.p.ctx.Err()).Err()
	}
}
