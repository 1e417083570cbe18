package bufpool

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// split cuts b into frames of at most n bytes, as gRPC's transport hands a
// received message to the codec.
func split(b []byte, n int) mem.BufferSlice {
	var bs mem.BufferSlice
	for len(b) > 0 {
		k := min(n, len(b))
		bs = append(bs, mem.SliceBuffer(bytes.Clone(b[:k])))
		b = b[k:]
	}
	return bs
}

func TestCodec_RoundTrip(t *testing.T) {
	c := NewCodec(New())
	if c.Name() != "proto" {
		t.Fatalf("Name %q, want proto", c.Name())
	}
	for _, size := range []int{0, 10, 1 << 20} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rand.IntN(256))
		}
		in := wrapperspb.Bytes(data)
		enc, err := c.Marshal(in)
		if err != nil {
			t.Fatalf("Marshal %d bytes: %v", size, err)
		}
		wire := enc.Materialize()
		enc.Free()
		if want, _ := proto.Marshal(in); !bytes.Equal(wire, want) {
			t.Fatalf("%d bytes: the codec's encoding differs from proto.Marshal's", size)
		}
		// Received in 16 KiB frames, as over HTTP/2.
		var out wrapperspb.BytesValue
		if err := c.Unmarshal(split(wire, 16<<10), &out); err != nil {
			t.Fatalf("Unmarshal %d bytes: %v", size, err)
		}
		if !bytes.Equal(out.GetValue(), data) {
			t.Fatalf("%d bytes: the decoded value differs", size)
		}
		// The joined buffer went back to the pool: the message must not
		// alias it. Dirty the pool's buffers and look again.
		for range 4 {
			bp := c.pool.Get(len(wire))
			for i := range *bp {
				(*bp)[i] = 0xAA
			}
			c.pool.Put(bp)
		}
		if !bytes.Equal(out.GetValue(), data) {
			t.Fatalf("%d bytes: the decoded value changed with the pool's buffers", size)
		}
	}
}

func TestCodec_RefusesNonProto(t *testing.T) {
	c := NewCodec(New())
	if _, err := c.Marshal("not a message"); err == nil || !strings.Contains(err.Error(), "not a proto.Message") {
		t.Fatalf("Marshal(string): %v, want a not-a-proto.Message error", err)
	}
	var s string
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{1})}, &s); err == nil || !strings.Contains(err.Error(), "not a proto.Message") {
		t.Fatalf("Unmarshal into *string: %v, want a not-a-proto.Message error", err)
	}
	var out wrapperspb.BytesValue
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0xff, 0xff})}, &out); err == nil {
		t.Fatal("Unmarshal of garbage: no error")
	}
}
