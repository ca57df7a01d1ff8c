package coordinator

import (
	"testing"
	"time"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// A ring member slower than the factor times the others' median compute
// time is flagged; in a ring of two the slow one is measured against the
// fast one; workers outside the ring, or without a report, are never
// flagged; nobody is without another's report.
func TestStragglers(t *testing.T) {
	for _, c := range []struct {
		name    string
		compute map[string]float64 // reported; absent: never heard
		ring    []string
		want    []string
	}{
		{"two, one twice as slow", map[string]float64{"a": 0.01, "b": 0.02}, []string{"a", "b"}, []string{"b"}},
		{"two, close", map[string]float64{"a": 0.01, "b": 0.014}, []string{"a", "b"}, nil},
		{"three, one slow", map[string]float64{"a": 0.01, "b": 0.011, "c": 0.03}, []string{"a", "b", "c"}, []string{"c"}},
		{"one alone", map[string]float64{"a": 0.5}, []string{"a"}, nil},
		{"the other unheard", map[string]float64{"a": 0.5}, []string{"a", "b"}, nil},
		{"slow but outside the ring", map[string]float64{"a": 0.01, "b": 0.01, "z": 1}, []string{"a", "b"}, nil},
		{"no step yet", map[string]float64{"a": 0.01, "b": 0}, []string{"a", "b"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &Service{leases: newLeases(), straggler: DefaultStragglerFactor}
			var workers []*pb.WorkerInfo
			var ring []*pb.RingMember
			for _, id := range []string{"a", "b", "c", "z"} {
				if v, ok := c.compute[id]; ok {
					s.leases.renew(id, time.Now().Add(time.Minute), "", v)
				}
				workers = append(workers, &pb.WorkerInfo{Id: id})
			}
			for _, id := range c.ring {
				ring = append(ring, &pb.RingMember{WorkerId: id})
			}
			s.heardFrom(workers, ring)
			var got []string
			for _, w := range workers {
				if w.GetStraggler() {
					got = append(got, w.GetId())
				}
				if _, ok := c.compute[w.GetId()]; ok != (w.GetHeartbeatAgeMs() >= 0) {
					t.Errorf("%s: heartbeat age %d", w.GetId(), w.GetHeartbeatAgeMs())
				}
			}
			if len(got) != len(c.want) || (len(got) > 0 && got[0] != c.want[0]) {
				t.Fatalf("flagged %v, want %v", got, c.want)
			}
		})
	}
}
