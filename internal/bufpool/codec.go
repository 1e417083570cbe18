package bufpool

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Codec is gRPC's proto codec with its buffers taken from a Pool. grpc-go's
// own codec marshals into, and joins a message's frames in, its default
// pool whatever pool the connection has, so each replication message (up to
// MiBs of pages) cost a zeroed buffer on both ends; on a primary streaming to
// two replicas that clearing, and the page faults of fresh buffers, were a
// twentieth of its CPU. Install it with grpc.ForceServerCodecV2 and
// grpc.ForceCodecV2; its name is "proto", so peers see no difference.
type Codec struct {
	pool mem.BufferPool
}

var _ encoding.CodecV2 = Codec{}

// NewCodec returns a Codec whose buffers come from pool.
func NewCodec(pool mem.BufferPool) Codec { return Codec{pool: pool} }

// Name is the content-subtype: the same as grpc-go's proto codec.
func (Codec) Name() string { return "proto" }

// Marshal encodes v, which must be a proto.Message, into one pooled buffer
// (a plain slice when it is too small to pool).
func (c Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("proto codec: cannot marshal %T: not a proto.Message", v)
	}
	size := proto.Size(m)
	// UseCachedSize reuses the sizes just computed; m is not changed
	// concurrently (gRPC's own codec relies on the same).
	opts := proto.MarshalOptions{UseCachedSize: true}
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := opts.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	bp := c.pool.Get(size)
	b, err := opts.MarshalAppend((*bp)[:0], m)
	if err != nil {
		c.pool.Put(bp)
		return nil, err
	}
	*bp = b
	return mem.BufferSlice{mem.NewBuffer(bp, c.pool)}, nil
}

// Unmarshal decodes data into v, which must be a proto.Message. proto
// copies what it keeps, so the joined buffer goes back to the pool at once.
func (c Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("proto codec: cannot unmarshal into %T: not a proto.Message", v)
	}
	buf := data.MaterializeToBuffer(c.pool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}
