package kernels

import (
	"testing"
	"time"

	"golang.org/x/sys/cpu"
)

// Every peak loop this machine has counts its FMAs exactly (so it runs
// every one of them), for any iteration count, and the pure-Go one is
// always there.
func TestPeakKernels(t *testing.T) {
	ks := PeakKernels()
	if ks[len(ks)-1].Name != "go" {
		t.Fatalf("kernels %v: the pure-Go loop is not last", ks)
	}
	names := map[string]bool{}
	for _, k := range ks {
		names[k.Name] = true
		for _, iters := range []int{0, 1, 2, 7, 1000, 20000} {
			if err := k.Check(iters); err != nil {
				t.Error(err)
			}
		}
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA && !names["avx2"] && peakHasAsm {
		t.Error("the CPU has AVX2 and FMA, but no avx2 loop is listed")
	}
	if cpu.X86.HasAVX512F && !names["avx512"] && peakHasAsm {
		t.Error("the CPU has AVX-512F, but no avx512 loop is listed")
	}
	t.Logf("peak loops: %v", names)
}

// MeasurePeak reports a positive rate for every loop and thread count
// (not timed against a bound: machines differ; speed is for benchmarks).
func TestMeasurePeak(t *testing.T) {
	for _, k := range PeakKernels() {
		for _, threads := range []int{1, 2} {
			p := MeasurePeak(k, threads, 20*time.Millisecond)
			if !(p.GFLOPS > 0) || p.Threads != threads || p.Kernel != k.Name || p.Width != k.Width || !(p.Seconds > 0) {
				t.Fatalf("%s: %+v", k.Name, p)
			}
			t.Logf("%s, %d threads: %.1f GFLOP/s", p.Kernel, threads, p.GFLOPS)
		}
	}
}

func BenchmarkPeak(b *testing.B) {
	for _, k := range PeakKernels() {
		b.Run(k.Name, func(b *testing.B) {
			for b.Loop() {
				k.run(1 << 16)
			}
			b.ReportMetric(float64(b.N)*float64(1<<16)*float64(k.FlopsPerIter)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
