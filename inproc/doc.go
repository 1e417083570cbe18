// Package inproc is an in-process gRPC channel: a grpc.ServiceRegistrar that
// services register on, and a grpc.ClientConnInterface that generated
// clients call through, with no socket, HTTP/2 framing or serialisation in
// between. Requests and replies are copied (proto.Merge), so neither side
// shares memory with the other, as over a real connection.
//
// The FUSE mount uses it to reach the storage server in the same process:
// every page read and write crosses it, so it is on the hot path (DESIGN §9).
// Streams run their handler in a goroutine and pass messages over channels.
// Calls and streams go through the interceptors given to New, as on a
// grpc.Server; a handler's panic fails its call with codes.Internal, never
// the process (the channel recovers what the interceptors do not).
//
// It may import grpc-go and protobuf, nothing of pagewire: any gRPC
// service can run over it.
package inproc
