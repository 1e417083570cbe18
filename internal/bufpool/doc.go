// Package bufpool is a gRPC buffer pool that does not zero the buffers it
// hands out. grpc-go's default pool clears every pooled buffer's whole
// capacity on Get; for the replication stream, whose messages are hundreds
// of KiB of pages that are overwritten at once, that clearing was a tenth
// of a replica's CPU. gRPC only reads what it has written into a buffer,
// so clearing buys nothing here.
//
// Pool is the pool, and Codec is gRPC's proto codec drawing its buffers
// from one. It may import grpc-go and protobuf, nothing of pagewire.
package bufpool
