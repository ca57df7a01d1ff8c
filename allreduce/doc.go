// Package allreduce sums float32 buffers across the members of a ring over
// gRPC: a chunked, pipelined ring reduce-scatter followed by an all-gather,
// so each member sends 2(N-1)/N of the buffer. It knows nothing of models.
//
// A Member registers the AllReduceRing service on the worker's gRPC server
// (create that server with ServerOptions), is told the ring by SetRing, and
// then sums buffers on the Generation SetRing returned with AllReduce, or
// with Start/Wait to overlap buckets with the backward pass; operations of
// a superseded generation fail and never reach the next generation's ring. Every frame is fenced by job, generation and
// operation sequence number; any failure fails the whole generation on every
// member within Config.Timeout, with an error naming the peer. See DESIGN.md.
package allreduce
