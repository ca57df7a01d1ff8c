package coordinator

import (
	"slices"
	"time"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// DefaultStragglerFactor is ServiceConfig.StragglerFactor's default.
const DefaultStragglerFactor = 1.5

// heardFrom fills in, on the leader, each worker's heartbeat age and
// compute time per step, and flags the ring's stragglers: members whose
// compute time is more than the straggler factor times the median of the
// other members' reported ones (the others', so that in a ring of two the
// slow one is measured against the fast one, not against itself; no
// member is flagged without another's report).
func (s *Service) heardFrom(workers []*pb.WorkerInfo, ring []*pb.RingMember) {
	now := time.Now()
	inRing := map[string]bool{}
	for _, m := range ring {
		inRing[m.GetWorkerId()] = true
	}
	for _, w := range workers {
		at, compute, ok := s.leases.lastHeard(w.GetId())
		w.HeartbeatAgeMs = -1
		if ok {
			w.HeartbeatAgeMs = now.Sub(at).Milliseconds()
		}
		w.ComputeSeconds = compute
	}
	others := make([]float64, 0, len(workers))
	for _, w := range workers {
		if !inRing[w.GetId()] || w.GetComputeSeconds() <= 0 {
			continue
		}
		others = others[:0]
		for _, o := range workers {
			if o != w && inRing[o.GetId()] && o.GetComputeSeconds() > 0 {
				others = append(others, o.GetComputeSeconds())
			}
		}
		w.Straggler = len(others) > 0 && w.GetComputeSeconds() > s.straggler*median(others)
	}
}

// median of xs (which it sorts); xs must not be empty.
func median(xs []float64) float64 {
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}
