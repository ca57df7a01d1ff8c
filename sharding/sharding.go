// Package sharding fixes which training images every global step uses and
// how a global batch is split among the ranks of a ring. The sequence
// depends only on the job seed, the data set size and the global batch size,
// so it survives any change of membership: a new ring splits the same global
// batch differently, it never changes it.
package sharding

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Sequence is the fixed sequence of global batches of a job: epoch e is a
// permutation of the data set drawn from (Seed, e); global step s takes the
// (s mod StepsPerEpoch)-th run of Batch indices of its epoch's permutation.
// The last partial batch of an epoch is dropped, as torch's loop does.
type Sequence struct {
	Seed  uint64
	N     int // images in the data set
	Batch int // global batch size

	epoch int64 // epoch whose permutation perm holds, or -1
	perm  []int32
}

// NewSequence checks the sizes and makes the sequence.
func NewSequence(seed uint64, n, batch int) (*Sequence, error) {
	if batch < 1 {
		return nil, fmt.Errorf("sharding: batch must be at least 1, got %d", batch)
	}
	if n < batch {
		return nil, fmt.Errorf("sharding: batch %d is larger than the data set (%d images)", batch, n)
	}
	return &Sequence{Seed: seed, N: n, Batch: batch, epoch: -1}, nil
}

// StepsPerEpoch is the number of full global batches in one pass.
func (s *Sequence) StepsPerEpoch() int64 { return int64(s.N / s.Batch) }

// Global writes the image indices of global step step (from 0) into dst,
// which must hold Batch values.
func (s *Sequence) Global(step int64, dst []int) {
	spe := s.StepsPerEpoch()
	e, j := step/spe, step%spe
	if e != s.epoch {
		s.permute(e)
	}
	for i := range dst[:s.Batch] {
		dst[i] = int(s.perm[int(j)*s.Batch+i])
	}
}

func (s *Sequence) permute(epoch int64) {
	if s.perm == nil {
		s.perm = make([]int32, s.N)
	}
	for i := range s.perm {
		s.perm[i] = int32(i)
	}
	rng := rand.New(rand.NewPCG(s.Seed, uint64(epoch)^0x9e3779b97f4a7c15))
	rng.Shuffle(len(s.perm), func(i, j int) { s.perm[i], s.perm[j] = s.perm[j], s.perm[i] })
	s.epoch = epoch
}

// EpochSteps is the steps of epochs passes over n images at batch: a
// partial step is not run (the reference scripts count so too); 0 when
// that is less than one step.
func EpochSteps(epochs float64, n, batch int) int64 {
	if !(epochs > 0) || n < 1 || batch < 1 {
		return 0
	}
	return int64(math.Floor(epochs*float64(n)/float64(batch) + 1e-9))
}

// Split returns the half-open range [lo, hi) of a global batch of size batch
// that rank (0-based) of world ranks computes: contiguous, in rank order,
// sizes differing by at most one.
func Split(batch, rank, world int) (lo, hi int) {
	lo = batch * rank / world
	hi = batch * (rank + 1) / world
	return lo, hi
}
