package coordinator

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// ApplyResult is what FSM.Apply returns, and so what a raft ApplyFuture's
// Response() holds on the node that proposed. Err is an application error
// (the command was refused; the state is unchanged) wrapping one of the
// package's sentinel errors. Value depends on the command:
//
//	RegisterWorker, RemoveWorkers  uint64: the ring generation after it
//	SubmitJob                      string: the new job's id
//	FinishJob                      string: the id of the job that started next, or ""
//	ReportProgress, RecordCheckpoint, RecordSample  nil
type ApplyResult struct {
	Value any
	Err   error
}

// FSM is the raft.FSM of the coordinators. It is thin: it decodes a log
// entry, checks it, and hands it to a State method; snapshots are deep
// copies of the State. Apply never reads a clock, draws a random number,
// iterates a map or does I/O, so every replica that applies the same log
// holds the same state.
//
// gRPC handlers read the state concurrently with Apply through Read.
type FSM struct {
	log *slog.Logger

	mu    sync.RWMutex
	state *State
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns an FSM holding the empty state. Corrupt log entries and
// commands too new for this binary are logged to logger (slog.Default if
// nil) as well as returned.
func NewFSM(logger *slog.Logger) *FSM {
	if logger == nil {
		logger = slog.Default()
	}
	return &FSM{log: logger.With("component", "fsm"), state: newState()}
}

// Read calls fn with the current state under a read lock. fn must not keep
// the *State or anything it points to after returning; the State's
// exported methods return copies, which may be kept.
func (f *FSM) Read(fn func(*State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.state)
}

// Apply applies one committed log entry and returns an ApplyResult. A
// refused command leaves the state unchanged on every replica alike. An
// entry that does not decode, or a command newer than this binary, is
// logged as well; Apply never panics on its input.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return ApplyResult{}
	}
	c, err := DecodeCommand(l.Data)
	if err == nil {
		err = ValidateCommand(c)
	}
	if err != nil {
		if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnsupportedVersion) {
			f.log.Error("raft log entry not applied; state unchanged", "index", l.Index, "term", l.Term, "err", err)
		}
		return ApplyResult{Err: err}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, err := apply(f.state, c)
	return ApplyResult{Value: v, Err: err}
}

// apply dispatches a valid command to the State method that carries it out.
func apply(s *State, c *pb.Command) (any, error) {
	now := c.GetTimeUnixMs()
	switch b := c.GetBody().(type) {
	case *pb.Command_RegisterWorker:
		return s.registerWorker(now, b.RegisterWorker)
	case *pb.Command_RemoveWorkers:
		return s.removeWorkers(b.RemoveWorkers)
	case *pb.Command_SubmitJob:
		return s.submitJob(now, b.SubmitJob)
	case *pb.Command_ReportProgress:
		return nil, s.reportProgress(now, b.ReportProgress)
	case *pb.Command_FinishJob:
		return s.finishJob(now, b.FinishJob)
	case *pb.Command_RecordCheckpoint:
		return s.recordCheckpoint(b.RecordCheckpoint)
	case *pb.Command_RenewRing:
		return s.renewRing(b.RenewRing)
	case *pb.Command_SetWorkerUnfit:
		return s.setWorkerUnfit(now, b.SetWorkerUnfit)
	case *pb.Command_CancelJob:
		return s.cancelJob(now, b.CancelJob)
	case *pb.Command_RecordSample:
		return nil, s.recordSample(b.RecordSample)
	}
	// ValidateCommand lets no other body through.
	return nil, fmt.Errorf("command: unknown body %T: %w", c.GetBody(), ErrInvalid)
}

// Snapshot captures a deep copy of the state; Persist encodes it while
// Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{state: f.state.snapshot()}, nil
}

// Restore replaces the whole state with a snapshot's. The snapshot is
// decoded and checked aside; on any error the current state stays.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("restore: read snapshot: %w", err)
	}
	s, err := decodeState(b)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	f.mu.Lock()
	f.state = s
	f.mu.Unlock()
	return nil
}

// fsmSnapshot is an immutable copy of the state, owned by raft's
// snapshotting goroutine.
type fsmSnapshot struct {
	state *pb.StateSnapshot
}

// Persist writes the encoded state to sink and closes it, or cancels it on
// error.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s.state)
	if err == nil {
		_, err = sink.Write(b)
	}
	if err == nil {
		return sink.Close()
	}
	if cerr := sink.Cancel(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return fmt.Errorf("persist snapshot %s: %w", sink.ID(), err)
}

// Release does nothing: the copy is garbage collected.
func (s *fsmSnapshot) Release() {}
