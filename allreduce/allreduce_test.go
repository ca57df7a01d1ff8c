package allreduce

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestAllReduceSizes(t *testing.T) {
	for n := 1; n <= 8; n++ {
		for _, chunk := range []int{0, 4 << 10} {
			t.Run(fmt.Sprintf("N=%d/chunk=%d", n, chunk), func(t *testing.T) {
				t.Parallel()
				nodes := ring(t, n, Config{ChunkBytes: chunk, Timeout: 20 * time.Second})
				for _, length := range slices.Compact([]int{0, 1, max(n-1, 0), n + 1, 1000003}) {
					if chunk != 0 && length > 100000 {
						length = 100003
					}
					bufs, want := inputs(n, length, 1)
					if errs := allReduce(nodes, bufs); errors.Join(errs...) != nil {
						t.Fatalf("length %d: %v", length, errs)
					}
					checkSum(t, bufs, want)
					// The same inputs again: the same bits (determinism across runs).
					again, _ := inputs(n, length, 1)
					if errs := allReduce(nodes, again); errors.Join(errs...) != nil {
						t.Fatalf("length %d again: %v", length, errs)
					}
					for j := range again[0] {
						if math.Float32bits(again[0][j]) != math.Float32bits(bufs[0][j]) {
							t.Fatalf("length %d: element %d differs between runs: %v vs %v", length, j, again[0][j], bufs[0][j])
						}
					}
				}
			})
		}
	}
}

func TestConcurrentBuckets(t *testing.T) {
	const n = 4
	nodes := ring(t, n, Config{ChunkBytes: 64 << 10})
	sizes := []int{1, 100000, 7, 3, 250001, 0, 65536, 12345}
	bufs := make([][][]float32, len(sizes)) // [bucket][rank]
	wants := make([][]float64, len(sizes))
	for b, size := range sizes {
		bufs[b], wants[b] = inputs(n, size, uint64(b)+10)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r, nd := range nodes {
		wg.Go(func() {
			ops := make([]*Op, len(sizes))
			for b := range sizes {
				ops[b] = nd.g.Start(context.Background(), bufs[b][r])
			}
			for _, op := range ops {
				if err := op.Wait(); err != nil {
					errs[r] = err
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for b := range sizes {
		checkSum(t, bufs[b], wants[b])
	}
}

func TestPeerKilled(t *testing.T) {
	base := runtime.NumGoroutine()
	const n, victim = 4, 2
	timeout := 2 * time.Second
	nodes := startNodes(t, n, Config{ChunkBytes: 16 << 10, Timeout: timeout})
	mid, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	nodes[victim].m.testSendHook = func(seq uint64, step int) {
		if step == 2 {
			once.Do(func() { close(mid) })
			<-release
		}
	}
	setRing(t, nodes, "job", 1)
	bufs, _ := inputs(n, 1<<20, 3)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r, nd := range nodes {
		wg.Go(func() {
			errs[r] = nd.g.AllReduce(context.Background(), bufs[r])
		})
	}
	<-mid
	killed := time.Now()
	nodes[victim].srv.Stop() // hard: closes every connection
	close(release)
	nodes[victim].m.Close()
	wg.Wait()
	took := time.Since(killed)
	if took > timeout+time.Second {
		t.Errorf("survivors took %v after the kill, timeout is %v", took, timeout)
	}
	named := false
	for r, err := range errs {
		if r == victim {
			continue
		}
		if err == nil {
			t.Errorf("rank %d reported success after rank %d was killed", r, victim)
			continue
		}
		var pe *PeerError
		if !errors.As(err, &pe) {
			t.Errorf("rank %d: error names no peer: %v", r, err)
		} else if pe.Rank == victim {
			named = true
		}
		t.Logf("rank %d: %v", r, err)
	}
	if !named {
		t.Errorf("no survivor named the killed rank %d", victim)
	}
	// The failed generation stays failed.
	if err := nodes[0].g.AllReduce(context.Background(), make([]float32, 10)); err == nil {
		t.Error("operation on a failed generation succeeded")
	}
	closeAll(nodes)
	checkNoLeak(t, base)
}

func TestSlowPeer(t *testing.T) {
	const n, slow = 3, 1
	timeout := time.Second
	nodes := startNodes(t, n, Config{Timeout: timeout})
	var mu sync.Mutex
	var delay time.Duration
	stop := make(chan struct{})
	var stopOnce sync.Once
	release := func() { stopOnce.Do(func() { close(stop) }) }
	t.Cleanup(release)
	nodes[slow].m.testSendHook = func(uint64, int) {
		mu.Lock()
		d := delay
		mu.Unlock()
		select {
		case <-time.After(d):
		case <-stop:
		}
	}
	setRing(t, nodes, "job", 1)

	// Under the timeout: correct results.
	mu.Lock()
	delay = timeout / 4
	mu.Unlock()
	bufs, want := inputs(n, 3000, 5)
	if errs := allReduce(nodes, bufs); errors.Join(errs...) != nil {
		t.Fatalf("slow peer under the timeout: %v", errs)
	}
	checkSum(t, bufs, want)

	// Over the timeout: everyone fails, the successor names the slow peer.
	mu.Lock()
	delay = 3 * timeout
	mu.Unlock()
	start := time.Now()
	bufs, _ = inputs(n, 3000, 6)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r, nd := range nodes {
		if r == slow {
			continue
		}
		wg.Go(func() { errs[r] = nd.g.AllReduce(context.Background(), bufs[r]) })
	}
	slowErr := nodes[slow].g.Start(context.Background(), bufs[slow])
	wg.Wait()
	if took := time.Since(start); took > timeout+time.Second {
		t.Errorf("others took %v to fail, timeout %v", took, timeout)
	}
	for r, err := range errs {
		if r == slow {
			continue
		}
		if err == nil {
			t.Fatalf("rank %d succeeded although rank %d stalled past the timeout", r, slow)
		}
		t.Logf("rank %d: %v", r, err)
	}
	// The successor names the slow rank: by its own timeout, or, if the
	// slow rank's receive timer fired first and it failed the generation,
	// by the broken stream from it.
	var pe *PeerError
	if !errors.As(errs[(slow+1)%n], &pe) || pe.Rank != slow {
		t.Errorf("successor's error does not name rank %d: %v", slow, errs[(slow+1)%n])
	}
	timedOut := false
	for _, err := range errs {
		timedOut = timedOut || errors.Is(err, ErrTimeout)
	}
	if !timedOut && !errors.Is(slowErr.Wait(), ErrTimeout) {
		t.Errorf("no rank reports a timeout: %v", errs)
	}
	release()
	if err := slowErr.Wait(); err == nil {
		t.Error("the slow rank reported success")
	}
}

// A rank that finishes its last operation and closes at once must not take
// down the frames its successor still needs (the stream is half-closed, not
// cancelled, when a generation ends normally).
func TestCloseRightAfterLastOp(t *testing.T) {
	for range 5 {
		const n = 4
		nodes := ring(t, n, Config{ChunkBytes: 32 << 10})
		bufs, want := inputs(n, 1<<20, 9)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for r, nd := range nodes {
			wg.Go(func() {
				errs[r] = nd.g.AllReduce(context.Background(), bufs[r])
				nd.srv.Stop() // as a process exiting does, before Close
				nd.m.Close()
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		checkSum(t, bufs, want)
		closeAll(nodes)
	}
}
