package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/gencluster/gencluster/allreduce"
	"github.com/gencluster/gencluster/models"
	"github.com/gencluster/gencluster/training"
	"google.golang.org/grpc"
)

// params makes tensors of the given lengths, each gradient holding its
// index plus a fraction per element (so a copy is checkable).
func params(lengths ...int) []*models.Param {
	var ps []*models.Param
	for i, n := range lengths {
		g := make([]float32, n)
		for k := range g {
			g[k] = float32(i) + float32(k)/float32(n+1)
		}
		ps = append(ps, &models.Param{Name: fmt.Sprintf("t%d", i), Grad: g, Data: make([]float32, n)})
	}
	return ps
}

func TestBucketsLayout(t *testing.T) {
	for _, tc := range []struct {
		name    string
		lengths []int
		cap     int   // bytes
		want    []int // tensors per bucket
	}{
		{"each tensor over the cap", []int{100, 100, 100}, 400, []int{1, 1, 1}},
		{"small ones fused", []int{10, 10, 10, 100, 10, 10, 10, 10, 100}, 160, []int{4, 4, 1}},
		{"tiny tail joins the last bucket", []int{100, 100, 1}, 400, []int{1, 2}},
		{"all under the cap", []int{10, 20, 30}, 1 << 20, []int{3}},
		{"one tensor", []int{7}, 4, []int{1}},
		{"no tensors: the loss alone", nil, 64, []int{0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := params(tc.lengths...)
			want := make([][]float32, len(ps))
			for i, p := range ps {
				want[i] = slices.Clone(p.Grad)
			}
			b, err := newBuckets(ps, tc.cap)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(b.size, tc.want) {
				t.Fatalf("tensors per bucket %v, want %v", b.size, tc.want)
			}
			// The gradients live in the flat buffer, in order, values kept,
			// and each bucket is exactly its tensors (the last one also the
			// loss).
			off := 0
			for i, p := range ps {
				if !slices.Equal(p.Grad, want[i]) {
					t.Errorf("%s: gradient changed by the layout", p.Name)
				}
				if &p.Grad[0] != &b.flat[off] || cap(p.Grad) != len(p.Grad) {
					t.Errorf("%s: not at offset %d of the flat buffer (or may grow into its neighbour)", p.Name, off)
				}
				off += len(p.Grad)
			}
			if len(b.flat) != off+1 || b.loss() != &b.flat[off] {
				t.Errorf("flat buffer of %d for %d values and the loss", len(b.flat), off)
			}
			k := 0
			for i := range b.count() {
				n := 0
				for range b.size[i] {
					n += len(ps[k].Grad)
					if b.of[ps[k]] != i {
						t.Errorf("%s in bucket %d, want %d", ps[k].Name, b.of[ps[k]], i)
					}
					k++
				}
				if i == b.count()-1 {
					n++ // the loss
				}
				if len(b.bucket(i)) != n {
					t.Errorf("bucket %d holds %d values, want %d", i, len(b.bucket(i)), n)
				}
				if i < b.count()-1 && 4*n < tc.cap {
					t.Errorf("bucket %d: %d bytes, under the cap of %d", i, 4*n, tc.cap)
				}
			}
		})
	}
}

// TestBucketsStartOrder: buckets become ready as their last tensor is
// finished, are started in order, and the last one only by finish.
func TestBucketsStartOrder(t *testing.T) {
	ps := params(100, 10, 10, 100, 10, 100)
	b, err := newBuckets(ps, 160) // buckets: [0] [1 2 3] [4 5]
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(b.size, []int{1, 3, 2}) {
		t.Fatalf("tensors per bucket %v", b.size)
	}
	for round := range 2 { // the counts reset every step
		b.begin()
		var started []int
		for _, p := range ps {
			from, to, err := b.done(p)
			if err != nil {
				t.Fatal(err)
			}
			for k := from; k < to; k++ {
				started = append(started, k)
			}
		}
		if !slices.Equal(started, []int{0, 1}) {
			t.Errorf("round %d: started %v during backward, want [0 1]", round, started)
		}
		from, to, err := b.finish()
		if err != nil || from != 2 || to != 3 {
			t.Errorf("round %d: finish started %d..%d (%v), want 2..3", round, from, to, err)
		}
	}

	// A tensor finished twice, or one that is not the model's, or one
	// never finished: the ranks would sum different things.
	b.begin()
	if _, _, err := b.done(ps[0]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.done(ps[0]); err == nil {
		t.Error("a tensor finished twice was taken")
	}
	if _, _, err := b.done(&models.Param{Name: "stranger"}); err == nil {
		t.Error("a stranger's gradient was taken")
	}
	if _, _, err := b.finish(); err == nil {
		t.Error("finish with unfinished tensors succeeded")
	}
}

func TestBucketsRefused(t *testing.T) {
	if _, err := newBuckets(params(10), 3); err == nil {
		t.Error("a cap under one value was taken")
	}
	ps := params(10, 10)
	if _, err := newBuckets([]*models.Param{ps[0], ps[1], ps[0]}, 64); err == nil {
		t.Error("a tensor listed twice was taken")
	}
}

func TestDefaultBucketBytes(t *testing.T) {
	for _, tc := range []struct{ grads, want int }{
		{0, MinBucketBytes}, {400 << 10, MinBucketBytes}, {2_600_000, 325_000}, {100 << 20, 100 << 20 / 8},
	} {
		if got := DefaultBucketBytes(tc.grads); got != tc.want {
			t.Errorf("DefaultBucketBytes(%d) = %d, want %d", tc.grads, got, tc.want)
		}
	}
}

// TestGradientOutOfOrderFailsJob: a model that reports a gradient twice
// in one backward pass (a bug every rank meets alike) fails the step as a
// job error, with nothing applied, rather than summing different tensors
// on different ranks or retrying in a new generation for ever.
func TestGradientOutOfOrderFailsJob(t *testing.T) {
	w := &Worker{id: "w-test", cfg: Config{Threads: 1}, log: testLogger()}
	j, a := vaeJob(t, w, "job-6-abc", 10)
	training.InitModel(j.model, 5)
	member, err := allreduce.NewMember(allreduce.Config{}, grpc.NewServer())
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	g, err := member.SetRing(ringOf(a))
	if err != nil {
		t.Fatal(err)
	}
	before := Checksum(j.params)
	j.bucketHook = func(step int64, bucket int) {
		if bucket == 0 {
			j.onGrad(j.order[0]) // reported again
		}
	}
	err = j.trainStep(context.Background(), g, a)
	var jerr *jobError
	if !errors.As(err, &jerr) || !strings.Contains(err.Error(), j.order[0].Name) {
		t.Errorf("step error %v, want a job error naming %s", err, j.order[0].Name)
	}
	if Checksum(j.params) != before || j.step != 0 || j.opt.Steps != 0 {
		t.Error("the step was applied")
	}
}
