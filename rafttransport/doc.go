// Package rafttransport carries hashicorp/raft's RPCs over gRPC: Transport
// is a raft.Transport (with raft.WithClose and raft.WithPreVote) over the
// RaftTransport service of api/raft.proto, whose messages spell out every
// field of raft's requests and responses (proto.go converts them both
// ways).
//
// Incoming RPCs arrive through a grpc.Server the transport shares with its
// owner's services (a coordinator's one gRPC port): New registers the
// service on it. Each RPC is handed to raft through the consumer channel
// and waits for raft's answer, the caller's context or Close; heartbeats
// take raft's fast path. Outgoing RPCs use one grpc.ClientConn per peer
// address, dialed lazily, with reconnect backoff capped at a second and a
// timeout per call (per 256 KiB for InstallSnapshot, which streams the
// snapshot in chunks). AppendEntriesPipeline is a real pipeline on one
// bidirectional stream: responses come back in request order.
//
// Every request's header carries the id of the sender's raft group
// (SetCluster); a transport refuses requests from another group, so a peer
// address that changed hands cannot join two groups. A node waiting to be
// added adopts the id carried by the first AppendEntries or InstallSnapshot
// it receives.
//
// The transport tracks unreachable peers: Unreachable lists those whose
// last call failed, with why and since when (for a readiness probe), and
// each outage is logged once when it starts and once when it ends.
//
// Config.Faults is the seam for fault injection in tests (partitions, lost
// replies; FaultSet is a ready implementation); it is nil in production.
// SetAppendEntriesRewrite lets the owner mend an incoming AppendEntries
// before raft sees it.
package rafttransport
