package rafttransport

import (
	"sync"

	"github.com/hashicorp/raft"
)

// Faults makes the network misbehave, for tests. Nil in production
// (Config.Faults). The transport calls its methods from many goroutines at
// once (raft's and gRPC's), on every RPC: they must be safe for that and
// return quickly.
type Faults interface {
	// Cut reports whether peer is unreachable from this node, both ways,
	// now: outgoing calls and pipelined requests to it fail at once, and
	// requests from it (by the address in their header) are refused with
	// Unavailable.
	Cut(peer raft.ServerAddress) bool
	// LoseReply reports whether to throw away raft's answer to an incoming
	// AppendEntries it has just handled: the caller sees Unavailable, as if
	// the reply were lost on the network, while raft has acted on the
	// request.
	LoseReply(req *raft.AppendEntriesRequest) bool
}

// FaultSet is a Faults whose behaviour a test changes while the transport
// runs. Its zero value injects no fault; its methods are safe for
// concurrent use, and a nil *FaultSet injects no fault either.
type FaultSet struct {
	mu        sync.RWMutex
	cut       func(raft.ServerAddress) bool
	loseReply func(*raft.AppendEntriesRequest) bool
}

var _ Faults = (*FaultSet)(nil)

// SetCut makes Cut answer with fn from now on; nil heals every cut.
func (f *FaultSet) SetCut(fn func(peer raft.ServerAddress) bool) {
	f.mu.Lock()
	f.cut = fn
	f.mu.Unlock()
}

// SetLoseReply makes LoseReply answer with fn from now on; nil loses no
// reply.
func (f *FaultSet) SetLoseReply(fn func(req *raft.AppendEntriesRequest) bool) {
	f.mu.Lock()
	f.loseReply = fn
	f.mu.Unlock()
}

// Cut implements Faults: the answer of the function of the latest SetCut,
// false without one. That function runs without the FaultSet's lock held.
func (f *FaultSet) Cut(peer raft.ServerAddress) bool {
	if f == nil {
		return false
	}
	f.mu.RLock()
	fn := f.cut
	f.mu.RUnlock()
	return fn != nil && fn(peer)
}

// LoseReply implements Faults: the answer of the function of the latest
// SetLoseReply, false without one. That function runs without the
// FaultSet's lock held.
func (f *FaultSet) LoseReply(req *raft.AppendEntriesRequest) bool {
	if f == nil {
		return false
	}
	f.mu.RLock()
	fn := f.loseReply
	f.mu.RUnlock()
	return fn != nil && fn(req)
}
