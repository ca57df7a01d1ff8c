package coordinator

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// A worker's calls carry its id and the secret the coordinators issued to
// it at its first join, in metadata: any coordinator checks them against
// the id's identity in the replicated state before acting for that id, so
// one worker cannot heartbeat, report, finish jobs or upload checkpoints
// as another. A follower passes them on with a call it forwards.
const (
	workerIDKey     = "gencluster-worker-id"
	workerSecretKey = "gencluster-worker-secret"
)

// withWorker returns ctx carrying the worker's id and secret for the
// outgoing call ("" secret: none, as before the first join).
func withWorker(ctx context.Context, id, secret string) context.Context {
	if id == "" || secret == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, workerIDKey, id, workerSecretKey, secret)
}

// forwardWorker copies the worker identity of an incoming call onto the
// outgoing one (a forwarded call).
func forwardWorker(in, out context.Context) context.Context {
	md, ok := metadata.FromIncomingContext(in)
	if !ok {
		return out
	}
	ids, secrets := md.Get(workerIDKey), md.Get(workerSecretKey)
	if len(ids) != 1 || len(secrets) != 1 {
		return out
	}
	return metadata.AppendToOutgoingContext(out, workerIDKey, ids[0], workerSecretKey, secrets[0])
}

// actingFor checks that the caller may act for worker id: the call's
// metadata names id and carries the secret whose hash the state keeps for
// it. A call without that metadata is refused when the service requires it
// (RequireWorkerSecret), whether or not id is registered: an id nobody
// joined as must not report a generation failed or end a job either. A
// call with it is always checked.
func (s *Service) actingFor(ctx context.Context, id string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	ids, secrets := md.Get(workerIDKey), md.Get(workerSecretKey)
	var want []byte
	s.fsm.Read(func(st *State) {
		if x := st.identity(id); x != nil {
			want = append([]byte(nil), x.GetSecretSha256()...)
		}
	})
	switch {
	case len(ids) == 0 && len(secrets) == 0:
		if s.requireSecret {
			s.log.Warn("call for a worker without its credentials refused", "worker", id)
			return status.Errorf(codes.Unauthenticated, "a call for worker %s must carry its id and secret", id)
		}
		return nil
	case len(ids) != 1 || len(secrets) != 1:
		return status.Error(codes.Unauthenticated, "worker credentials: want one id and one secret")
	case ids[0] != id:
		s.log.Warn("worker acting for another refused", "caller", ids[0], "for", id)
		return status.Errorf(codes.PermissionDenied, "worker %s may not act for worker %s", ids[0], id)
	}
	if len(want) == 0 && !s.node.IsLeader() {
		// Perhaps a new worker whose join this replica has not applied yet.
		return status.Errorf(codes.Unavailable, "coordinator %s does not know worker %s yet (its replica may lag the leader's); try another", s.node.ID(), id)
	}
	got := sha256.Sum256([]byte(secrets[0]))
	if len(want) == 0 || subtle.ConstantTimeCompare(got[:], want) != 1 {
		s.log.Warn("worker secret refused", "worker", id)
		return status.Errorf(codes.PermissionDenied, "worker %s: the secret is not the one issued to it", id)
	}
	return nil
}

// neighbours reports whether a and b are next to each other in the ring
// (a ring of two: each is the other's neighbour).
func neighbours(st *State, a, b string) bool {
	ring := st.Ring()
	n := len(ring)
	for i, m := range ring {
		if m.GetWorkerId() != a {
			continue
		}
		return n > 1 && (ring[(i+1)%n].GetWorkerId() == b || ring[(i+n-1)%n].GetWorkerId() == b)
	}
	return false
}

// ringMember refuses what only a member of the current ring may send
// (progress, the end of a job, a checkpoint; what names it) when worker id
// is not one: a registered worker outside the job's ring may not move,
// end or overwrite it. A follower whose replica does not list id may lag
// the leader, so it answers Unavailable (try another); the leader refuses.
func (s *Service) ringMember(what, id string) error {
	var in bool
	s.fsm.Read(func(st *State) {
		in = id != "" && slices.ContainsFunc(st.Ring(), func(m *pb.RingMember) bool { return m.GetWorkerId() == id })
	})
	switch {
	case in:
		return nil
	case !s.node.IsLeader():
		return status.Errorf(codes.Unavailable, "coordinator %s does not list worker %q in the ring (its replica may lag the leader's); try another", s.node.ID(), id)
	}
	s.log.Warn("call from outside the ring refused", "what", what, "worker", id)
	return status.Errorf(codes.PermissionDenied, "%s from worker %q, which is not in the ring: %v", what, id, ErrNotInRing)
}

// checkBlame refuses a failure report that blames a worker which is not
// the reporter's ring neighbour: a worker only ever sees its neighbours
// fail.
func checkBlame(st *State, reporter, failed string) error {
	if failed == "" || neighbours(st, reporter, failed) {
		return nil
	}
	return status.Error(codes.PermissionDenied, fmt.Sprintf("worker %s may report only its ring neighbours failed, not %s", reporter, failed))
}
