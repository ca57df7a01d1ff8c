package sharding

import (
	"slices"
	"testing"
)

func TestSequenceIsAPermutationPerEpoch(t *testing.T) {
	s, err := NewSequence(7, 103, 10)
	if err != nil {
		t.Fatal(err)
	}
	if s.StepsPerEpoch() != 10 {
		t.Fatalf("steps per epoch %d", s.StepsPerEpoch())
	}
	for e := int64(0); e < 3; e++ {
		seen := map[int]bool{}
		b := make([]int, 10)
		for j := int64(0); j < 10; j++ {
			s.Global(e*10+j, b)
			for _, i := range b {
				if i < 0 || i >= 103 || seen[i] {
					t.Fatalf("epoch %d: index %d repeated or out of range", e, i)
				}
				seen[i] = true
			}
		}
	}
}

func TestSequenceDeterministicAndRandomAccess(t *testing.T) {
	a, _ := NewSequence(1, 1000, 32)
	b, _ := NewSequence(1, 1000, 32)
	c, _ := NewSequence(2, 1000, 32)
	x, y, z := make([]int, 32), make([]int, 32), make([]int, 32)
	// b visits steps out of order (as a restarted worker does): same batches.
	for _, step := range []int64{0, 95, 31, 32, 1, 200} {
		a.Global(step, x)
		b.Global(step, y)
		if !slices.Equal(x, y) {
			t.Fatalf("step %d differs between two sequences of the same seed", step)
		}
		c.Global(step, z)
		if slices.Equal(x, z) {
			t.Fatalf("step %d is the same with another seed", step)
		}
	}
	a.Global(0, x)
	a.Global(31, y) // epoch 1, first step
	if slices.Equal(x, y) {
		t.Fatal("epochs 0 and 1 start with the same batch")
	}
}

func TestSplitCoversBatch(t *testing.T) {
	for batch := 1; batch < 40; batch++ {
		for world := 1; world <= 8; world++ {
			next := 0
			for r := 0; r < world; r++ {
				lo, hi := Split(batch, r, world)
				if lo != next || hi < lo || hi-lo > batch/world+1 {
					t.Fatalf("batch %d world %d rank %d: [%d,%d)", batch, world, r, lo, hi)
				}
				next = hi
			}
			if next != batch {
				t.Fatalf("batch %d world %d: split ends at %d", batch, world, next)
			}
		}
	}
}

func TestNewSequenceRejects(t *testing.T) {
	if _, err := NewSequence(1, 10, 0); err == nil {
		t.Error("batch 0 accepted")
	}
	if _, err := NewSequence(1, 10, 11); err == nil {
		t.Error("batch larger than data set accepted")
	}
}
