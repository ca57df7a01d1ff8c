package coordinator

import (
	"context"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// leases holds the workers' lease deadlines. Only the leader's copy
// matters: heartbeats renew it in memory and are never replicated; when a
// deadline passes, the leader commits the worker's removal. A new leader
// starts every registered worker's lease afresh, so a leader change gives
// workers one full lease to find it.
type leases struct {
	mu       sync.Mutex
	deadline map[string]time.Time
}

func newLeases() *leases { return &leases{deadline: map[string]time.Time{}} }

func (l *leases) renew(id string, until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deadline[id] = until
}

func (l *leases) drop(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.deadline, id)
}

func (l *leases) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.deadline)
}

// expired reconciles the leases with the registered workers (new ones get
// a lease until fresh, removed ones are forgotten) and returns, sorted, the
// workers whose lease ended before now.
func (l *leases) expired(registered []string, now, fresh time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	known := make(map[string]bool, len(registered))
	for _, id := range registered {
		known[id] = true
		d, ok := l.deadline[id]
		if !ok {
			l.deadline[id] = fresh
			continue
		}
		if now.After(d) {
			out = append(out, id)
		}
	}
	for id := range l.deadline {
		if !known[id] {
			delete(l.deadline, id)
		}
	}
	slices.Sort(out)
	return out
}

// keepLeases runs until Close: while this node leads, it removes workers
// whose lease expired.
func (s *Service) keepLeases() {
	defer close(s.done)
	tick := time.NewTicker(max(s.lease/5, 20*time.Millisecond))
	defer tick.Stop()
	leading := false
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		if !s.node.IsLeader() {
			if leading {
				s.leases.reset()
			}
			leading = false
			continue
		}
		if !leading {
			// Just elected: every worker gets a full lease from now.
			s.leases.reset()
			leading = true
		}
		var ids []string
		s.fsm.Read(func(st *State) {
			for _, w := range st.Workers() {
				ids = append(ids, w.GetId())
			}
		})
		now := time.Now()
		dead := s.leases.expired(ids, now, now.Add(s.lease))
		if len(dead) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.lease)
		v, err := s.propose(ctx, &pb.Command{Body: &pb.Command_RemoveWorkers{RemoveWorkers: &pb.RemoveWorkers{WorkerIds: dead, Reason: "lease"}}})
		cancel()
		if err != nil {
			s.log.Warn("removing workers whose lease expired failed", "workers", dead, "err", err)
			continue
		}
		for _, id := range dead {
			s.leases.drop(id)
		}
		s.log.Warn("workers removed: lease expired", "workers", dead, "generation", v)
	}
}

func markForwarded(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, forwardedKey, "1")
}

func isForwarded(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	return ok && len(md.Get(forwardedKey)) > 0
}
