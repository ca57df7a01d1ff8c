package allreduce

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by operations on a closed Member.
	ErrClosed = errors.New("allreduce: member closed")
	// ErrSuperseded fails the operations of a generation replaced by SetRing.
	ErrSuperseded = errors.New("allreduce: ring generation superseded")
	// ErrTimeout is wrapped by a PeerError when a peer stayed silent for
	// Config.Timeout.
	ErrTimeout = errors.New("allreduce: peer timed out")
	// ErrFenced is wrapped when a peer sends data of another job or
	// generation, or an impossible frame (garbage).
	ErrFenced = errors.New("allreduce: frame refused")
	// ErrPeerLeft is wrapped by a PeerError when the peer is alive but
	// ended the generation itself: it closed its stream cleanly, or answered
	// that its generation failed or is not ours. The peer is then not the
	// cause; the cause is elsewhere in the ring (or a newer generation).
	ErrPeerLeft = errors.New("allreduce: peer left the generation")
)

// PeerError is an operation failure blamed on one ring neighbour.
type PeerError struct {
	Rank int    // the peer's index in the ring
	Addr string // the peer's address
	Err  error
}

func (e *PeerError) Error() string {
	return fmt.Sprintf("allreduce: peer rank %d (%s): %v", e.Rank, e.Addr, e.Err)
}

func (e *PeerError) Unwrap() error { return e.Err }

// generationError wraps the error that failed a generation, for the
// operations that fail because of it.
type generationError struct {
	job        string
	generation uint64
	err        error
}

func (e *generationError) Error() string {
	return fmt.Sprintf("allreduce: job %q generation %d failed: %v", e.job, e.generation, e.err)
}

func (e *generationError) Unwrap() error { return e.err }
