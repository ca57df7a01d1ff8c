package kernels

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"
)

// Peak FMA throughput. A peak kernel runs a loop of fused multiply-adds on
// registers only (no load, no store, independent accumulators enough to
// hide the FMA latency), so its rate is what the cores' FMA units can do
// at this SIMD width: the ceiling a compute kernel is measured against.

// PeakKernel is one register-only FMA loop.
type PeakKernel struct {
	Name  string // e.g. "avx512", "avx2", "go"
	Width int    // float32 lanes a vector
	// FlopsPerIter is the floating-point operations one iteration does
	// (an FMA counts two).
	FlopsPerIter int
	// run runs iters iterations (iters <= maxPeakIters) and returns the
	// sum of its accumulators' lanes: every FMA adds 1*1, so the sum is
	// iters*FlopsPerIter/2, exact while that is below 2^24.
	run func(iters int) float32
}

// maxPeakIters bounds one run so that its accumulators (which add 1 an
// iteration) stay exact in float32.
const maxPeakIters = 1 << 22

// PeakKernels lists the peak loops this machine can run, widest first;
// the last is always the pure-Go one.
func PeakKernels() []PeakKernel { return append(peakAsm(), peakGo) }

// peakGo is the pure-Go loop: eight scalar accumulators (the compiler
// emits a multiply and an add, fused or not as the target allows).
var peakGo = PeakKernel{Name: "go", Width: 1, FlopsPerIter: 16, run: peakLoopGo}

func peakLoopGo(iters int) float32 {
	var a0, a1, a2, a3, a4, a5, a6, a7 float32
	one := float32(1)
	for range iters {
		a0 = a0 + one*one
		a1 = a1 + one*one
		a2 = a2 + one*one
		a3 = a3 + one*one
		a4 = a4 + one*one
		a5 = a5 + one*one
		a6 = a6 + one*one
		a7 = a7 + one*one
	}
	return a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7
}

// Check runs the kernel once and reports an error if its result is not
// the exact count of its FMAs (iters is capped so that it is exact).
func (k PeakKernel) Check(iters int) error {
	iters = min(iters, (1<<24)/(k.FlopsPerIter/2))
	got := k.run(iters)
	if want := float32(iters * k.FlopsPerIter / 2); got != want {
		return fmt.Errorf("kernels: peak loop %s: %d iterations summed to %v, want %v", k.Name, iters, got, want)
	}
	return nil
}

// Peak is a measured FMA rate.
type Peak struct {
	Kernel  string  `json:"kernel"`
	Width   int     `json:"width"`   // float32 lanes a vector
	Threads int     `json:"threads"` // goroutines, each locked to an OS thread
	GFLOPS  float64 `json:"gflops"`  // all threads together
	Seconds float64 `json:"seconds"` // measured
}

// MeasurePeak runs k on threads goroutines (each locked to its OS thread)
// at once, in chunks of about 10 ms for about d after a warm-up chunk, and
// returns their combined rate: each thread's work in its median chunk
// time, summed. (The median, not the total: a chunk the OS gave to
// another process says nothing about the FMA units.)
func MeasurePeak(k PeakKernel, threads int, d time.Duration) Peak {
	threads = max(threads, 1)
	// Calibrate one chunk to ~10 ms on one thread.
	chunk := 1 << 14
	for {
		t := time.Now()
		k.run(chunk)
		if el := time.Since(t); el > 5*time.Millisecond || chunk >= maxPeakIters {
			chunk = min(maxPeakIters, max(1, int(float64(chunk)*float64(10*time.Millisecond)/float64(max(el, time.Microsecond)))))
			break
		}
		chunk *= 4
	}
	chunks := max(3, int(d/(10*time.Millisecond)))
	medians := make([]float64, threads)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			k.run(chunk) // warm-up (clocks up)
			<-start
			times := make([]float64, chunks)
			for j := range times {
				t := time.Now()
				k.run(chunk)
				times[j] = time.Since(t).Seconds()
			}
			slices.Sort(times)
			medians[i] = times[chunks/2]
		}()
	}
	t := time.Now()
	close(start)
	wg.Wait()
	el := time.Since(t).Seconds()
	perChunk := float64(chunk) * float64(k.FlopsPerIter)
	var rate float64
	for _, m := range medians {
		rate += perChunk / m
	}
	return Peak{Kernel: k.Name, Width: k.Width, Threads: threads, GFLOPS: rate / 1e9, Seconds: el}
}
