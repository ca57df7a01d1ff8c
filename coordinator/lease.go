package coordinator

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// leases holds the workers' lease deadlines and what the leader has heard
// from them. Only the leader's copy matters: heartbeats renew it in memory
// and are never replicated; when a deadline passes, the leader commits the
// worker's removal.
//
// A new leader has heard from no one: every registered worker is
// unconfirmed until it joins or heartbeats, and may take until holdUntil
// (the election plus the rejoin wait) to do so. After a whole-cluster
// restart that is the time the workers of the interrupted ring have to
// come back; meanwhile a ring with unconfirmed members does not start a
// new generation (Service.hold), so the first worker back never runs ahead
// alone. Those that do not come back are removed at holdUntil and the job
// goes on without them, with a warning.
type leases struct {
	mu        sync.Mutex
	leading   bool
	holdUntil time.Time
	deadline  map[string]time.Time
	confirmed map[string]bool
	// ready is the job whose replica each worker last said it has built;
	// jobSeen, when this leader first held a job's ring for readiness.
	ready   map[string]string
	jobSeen map[string]time.Time
	// accused counts, per worker, the failed generations in a row for
	// which a ring peer blamed it while it answered the leader's probe.
	accused map[string]accusation
	// heard is, per worker, when this leader last heard from it and the
	// compute time per step it last reported (for status; not replicated).
	heard map[string]heard
}

// heard is the last word from a worker.
type heard struct {
	at      time.Time
	compute float64 // seconds per step; 0 if unknown
}

// accusation: how many generations in a row, the last of them.
type accusation struct {
	count      int
	generation uint64
}

func newLeases() *leases {
	return &leases{deadline: map[string]time.Time{}, confirmed: map[string]bool{}, accused: map[string]accusation{},
		ready: map[string]string{}, jobSeen: map[string]time.Time{}, heard: map[string]heard{}}
}

// elected starts the leader's term of leases: no one confirmed, every
// registered worker given until max(now+lease, now+rejoinWait).
func (l *leases) elected(now time.Time, rejoinWait time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leading = true
	l.holdUntil = now.Add(rejoinWait)
	clear(l.deadline)
	clear(l.confirmed)
	clear(l.accused)
	clear(l.ready)
	clear(l.jobSeen)
	clear(l.heard)
}

// deposed forgets everything: only a leader keeps leases.
func (l *leases) deposed() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leading = false
	clear(l.deadline)
	clear(l.confirmed)
	clear(l.accused)
	clear(l.ready)
	clear(l.jobSeen)
	clear(l.heard)
}

func (l *leases) isLeading() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.leading
}

// renew records that the worker was heard from: confirmed, leased until,
// holding the replica of readyJob ("" if none).
func (l *leases) renew(id string, until time.Time, readyJob string, compute float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deadline[id] = until
	l.confirmed[id] = true
	l.ready[id] = readyJob
	h := heard{at: time.Now(), compute: compute}
	if compute <= 0 { // a join says nothing of it: keep the last report
		h.compute = l.heard[id].compute
	}
	l.heard[id] = h
}

// lastHeard returns when the leader last heard from the worker and its
// reported compute time per step; ok is false if not since it was elected.
func (l *leases) lastHeard(id string) (at time.Time, compute float64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, ok := l.heard[id]
	return h.at, h.compute, ok
}

func (l *leases) drop(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.heard, id)
	delete(l.deadline, id)
	delete(l.confirmed, id)
	delete(l.accused, id)
	delete(l.ready, id)
}

// accuse counts a failed generation blamed on a live worker (once per
// generation, however many peers blame it) and returns the count.
func (l *leases) accuse(id string, generation uint64) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.accused[id]
	if a.generation != generation {
		a.count++
		a.generation = generation
		l.accused[id] = a
	}
	return a.count
}

// acquit clears every accusation: the ring made progress.
func (l *leases) acquit() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.accused)
}

// unconfirmed returns, in the given order, the ids not heard from since
// the election while the hold lasts; nil once it is over.
func (l *leases) unconfirmed(ids []string, now time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.leading || !now.Before(l.holdUntil) {
		return nil
	}
	var out []string
	for _, id := range ids {
		if !l.confirmed[id] {
			out = append(out, id)
		}
	}
	return out
}

// unready returns, in the given order, the confirmed ids that have not
// said they hold job's replica, for at most wait after this leader first
// asked about the job (then nil: a member that takes longer is waited for
// by the ring's own timeout, as before).
func (l *leases) unready(ids []string, job string, now time.Time, wait time.Duration) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.leading {
		return nil
	}
	seen, ok := l.jobSeen[job]
	if !ok {
		seen = now
		l.jobSeen[job] = now
	}
	if !now.Before(seen.Add(wait)) {
		return nil
	}
	var out []string
	for _, id := range ids {
		if l.confirmed[id] && l.ready[id] != job {
			out = append(out, id)
		}
	}
	return out
}

// expired reconciles the leases with the registered workers (one not seen
// yet gets a lease until fresh, or until the hold ends if that is later;
// removed ones are forgotten) and returns, sorted, the workers whose lease
// ended before now, and which of those were never heard from since the
// election.
func (l *leases) expired(registered []string, now, fresh time.Time) (dead, silent []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	known := make(map[string]bool, len(registered))
	for _, id := range registered {
		known[id] = true
		d, ok := l.deadline[id]
		if !ok {
			l.deadline[id] = fresh
			if !l.confirmed[id] && l.holdUntil.After(fresh) {
				l.deadline[id] = l.holdUntil
			}
			continue
		}
		if now.After(d) {
			dead = append(dead, id)
			if !l.confirmed[id] {
				silent = append(silent, id)
			}
		}
	}
	for id := range l.deadline {
		if !known[id] {
			delete(l.deadline, id)
			delete(l.confirmed, id)
		}
	}
	slices.Sort(dead)
	slices.Sort(silent)
	return dead, silent
}

// keepLeases runs until Close: while this node leads (as raft tells
// OnLeadershipChange), it removes workers whose lease expired.
func (s *Service) keepLeases() {
	defer close(s.done)
	tick := time.NewTicker(max(s.lease/5, 20*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		if !s.leases.isLeading() {
			continue
		}
		var ids []string
		addrs := map[string]string{}
		s.fsm.Read(func(st *State) {
			for _, w := range st.Workers() {
				ids = append(ids, w.GetId())
				addrs[w.GetId()] = w.GetAddr()
			}
		})
		now := time.Now()
		dead, silent := s.leases.expired(ids, now, now.Add(s.lease))
		if len(dead) == 0 {
			continue
		}
		rm := &pb.RemoveWorkers{WorkerIds: dead, Reason: "lease"}
		if len(silent) > 0 {
			rm.JobWarning = fmt.Sprintf("went on without %v: not back within %v of the coordinators' leader change (--rejoin-wait)", silent, s.rejoinWait)
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.lease)
		v, err := s.propose(ctx, &pb.Command{Body: &pb.Command_RemoveWorkers{RemoveWorkers: rm}})
		cancel()
		if err != nil {
			s.log.Warn("removing workers whose lease expired failed", "workers", dead, "err", err)
			continue
		}
		s.counts.leaseExpiries.Add(uint64(len(dead)))
		for _, id := range dead {
			s.leases.drop(id)
			why := "lease expired"
			if slices.Contains(silent, id) {
				why = "not back within the rejoin wait after a leader change"
			}
			s.log.Warn("worker removed", "worker", id, "addr", addrs[id], "why", why, "generation", v)
		}
		if len(silent) > 0 {
			s.log.Warn("workers of the interrupted ring did not come back; going on without them", "workers", silent, "waited", s.rejoinWait, "generation", v)
		}
	}
}

func markForwarded(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, forwardedKey, "1")
}

func isForwarded(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	return ok && len(md.Get(forwardedKey)) > 0
}
