package allreduce

// plan is the schedule of one operation on one rank: the buffer is cut into
// N segments, each segment into chunks of at most chunk elements. Step s
// (0 <= s < 2(N-1)) sends one segment to the successor and receives another
// from the predecessor; steps below N-1 are the reduce-scatter (received
// chunks are added), the rest the all-gather (received chunks are copied).
//
// The segment a rank sends at step s is the one it received at step s-1, so
// the send of chunk c at step s waits only for the receive of chunk c at step
// s-1: that is the pipeline.
type plan struct {
	n, rank int
	length  int // elements
	chunk   int // elements per chunk
}

func (p plan) steps() int { return 2 * (p.n - 1) }

// segment returns the bounds of segment i: lengths differ by at most one,
// and segments are empty when length < n.
func (p plan) segment(i int) (lo, hi int) {
	return i * p.length / p.n, (i + 1) * p.length / p.n
}

func (p plan) mod(i int) int { return ((i % p.n) + p.n) % p.n }

// sendSeg is the segment this rank sends at step s.
func (p plan) sendSeg(s int) int {
	if s < p.n-1 {
		return p.mod(p.rank - s)
	}
	return p.mod(p.rank + 1 - (s - (p.n - 1)))
}

// recvSeg is the segment this rank receives at step s.
func (p plan) recvSeg(s int) int {
	if s < p.n-1 {
		return p.mod(p.rank - s - 1)
	}
	return p.mod(p.rank - (s - (p.n - 1)))
}

// chunks is the number of chunks of segment i.
func (p plan) chunks(i int) int {
	lo, hi := p.segment(i)
	return (hi - lo + p.chunk - 1) / p.chunk
}

// chunkAt returns the element bounds of chunk c of segment i.
func (p plan) chunkAt(i, c int) (lo, hi int) {
	slo, shi := p.segment(i)
	lo = slo + c*p.chunk
	return lo, min(lo+p.chunk, shi)
}
