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
// ring's reported ones (a ring of fewer than two reports flags no one).
func (s *Service) heardFrom(workers []*pb.WorkerInfo, ring []*pb.RingMember) {
	now := time.Now()
	inRing := map[string]bool{}
	for _, m := range ring {
		inRing[m.GetWorkerId()] = true
	}
	var ringTimes []float64
	for _, w := range workers {
		at, compute, ok := s.leases.lastHeard(w.GetId())
		w.HeartbeatAgeMs = -1
		if ok {
			w.HeartbeatAgeMs = now.Sub(at).Milliseconds()
		}
		w.ComputeSeconds = compute
		if inRing[w.GetId()] && compute > 0 {
			ringTimes = append(ringTimes, compute)
		}
	}
	if len(ringTimes) < 2 {
		return
	}
	med := median(ringTimes)
	for _, w := range workers {
		w.Straggler = inRing[w.GetId()] && w.GetComputeSeconds() > s.straggler*med
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
