package worker

import (
	"fmt"

	"github.com/gencluster/gencluster/models"
)

// MinBucketBytes is the least gradient bucket cap a job that names none
// (JobSpec.bucket_kib 0) gets; see DefaultBucketBytes.
const MinBucketBytes = 64 << 10

// DefaultBucketBytes is the gradient bucket cap of a job that names none:
// an eighth of the model's gradients, at least MinBucketBytes. About eight
// buckets let most of the sum overlap backward (one bucket could start
// only when backward ends) while each ring operation, which costs a round
// trip around the ring whatever its size, still carries a good share.
func DefaultBucketBytes(gradBytes int) int { return max(MinBucketBytes, gradBytes/8) }

// buckets fuses a model's gradients into the all-reduce operations of a
// step, as DDP's gradient buckets do: the gradients live in one flat
// buffer in the order backward finishes them, followed by the step's
// summed loss, and each bucket is a contiguous run of it, so a bucket is
// summed in place without copying. A bucket holds whole tensors and closes
// once it reaches the cap (a tensor larger than the cap is a bucket of its
// own). Every rank builds the same buckets from the same model and cap,
// and starts them in the same order.
//
// A bucket is started as soon as backward has finished all its tensors,
// so that summing it overlaps the rest of the backward pass. The last
// bucket also carries the loss, which is known only when backward
// returns: it is started then (by finish).
type buckets struct {
	flat   []float32 // gradients in backward order, then the loss
	bounds []int     // bucket i is flat[bounds[i]:bounds[i+1]]
	of     map[*models.Param]int
	size   []int // tensors in each bucket
	first  []*models.Param

	// The step in flight.
	left []int // tensors of each bucket backward has not finished
	next int   // the first bucket not yet started
}

// newBuckets lays the gradients of order (backward's order, each tensor
// once) out in one buffer, re-pointing each Param.Grad into it, and cuts
// it into buckets of at least capBytes (but a bucket that holds all the
// model's gradients).
func newBuckets(order []*models.Param, capBytes int) (*buckets, error) {
	if capBytes < 4 {
		return nil, fmt.Errorf("gradient bucket cap of %d bytes: want at least 4", capBytes)
	}
	n := 1 // the loss
	for _, p := range order {
		n += len(p.Grad)
	}
	b := &buckets{flat: make([]float32, n), of: make(map[*models.Param]int, len(order)), bounds: []int{0}}
	off, inBucket := 0, 0
	for i, p := range order {
		if _, dup := b.of[p]; dup {
			return nil, fmt.Errorf("gradient of %s finished twice in one backward pass", p.Name)
		}
		g := b.flat[off : off+len(p.Grad) : off+len(p.Grad)]
		copy(g, p.Grad)
		p.Grad = g
		off += len(g)
		if inBucket == 0 {
			b.first = append(b.first, p)
			b.size = append(b.size, 0)
		}
		k := len(b.size) - 1
		b.of[p] = k
		b.size[k]++
		inBucket += 4 * len(g)
		if inBucket >= capBytes && i < len(order)-1 {
			b.bounds = append(b.bounds, off)
			inBucket = 0
		}
	}
	if len(order) == 0 { // nothing to learn: the loss alone
		b.size, b.first = []int{0}, []*models.Param{nil}
	}
	// A last bucket under the cap (say, the first layer's bias and the
	// loss) joins the one before: it would start when backward returns
	// all the same, and a ring operation of its own costs a round trip.
	if k := len(b.size) - 1; k > 0 && 4*(n-off)+inBucket < capBytes {
		b.bounds = b.bounds[:k]
		for p, i := range b.of {
			if i == k {
				b.of[p] = k - 1
			}
		}
		b.size[k-1] += b.size[k]
		b.size, b.first = b.size[:k], b.first[:k]
	}
	b.bounds = append(b.bounds, n)
	b.left = make([]int, len(b.size))
	return b, nil
}

// count is the number of buckets.
func (b *buckets) count() int { return len(b.size) }

// bucket returns bucket i's values.
func (b *buckets) bucket(i int) []float32 { return b.flat[b.bounds[i]:b.bounds[i+1]] }

// loss is the element the summed loss travels in (in the last bucket).
func (b *buckets) loss() *float32 { return &b.flat[len(b.flat)-1] }

// begin resets the per-step counts.
func (b *buckets) begin() {
	copy(b.left, b.size)
	b.next = 0
}

// done records that backward finished p and returns the buckets that are
// now complete and may start, in order (all but the last bucket, which
// finish starts). It returns an error for a tensor that is not one of the
// model's or is finished twice: the ranks would sum different values.
func (b *buckets) done(p *models.Param) (from, to int, err error) {
	k, ok := b.of[p]
	if !ok || b.left[k] == 0 {
		return 0, 0, fmt.Errorf("gradient of %s finished out of the model's order", p.Name)
	}
	b.left[k]--
	from = b.next
	for b.next < len(b.size)-1 && b.left[b.next] == 0 {
		b.next++
	}
	return from, b.next, nil
}

// finish returns the buckets still to start once backward has returned
// (the last one at least), or an error if some tensor was never finished.
func (b *buckets) finish() (from, to int, err error) {
	for k, n := range b.left {
		if n != 0 {
			return 0, 0, fmt.Errorf("backward did not finish the gradient of bucket %d (from %s)", k, b.first[k].Name)
		}
	}
	from, b.next = b.next, len(b.size)
	return from, b.next, nil
}
