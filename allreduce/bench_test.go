package allreduce

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// BenchmarkAllReduce times one all-reduce of S bytes over an N-member ring in
// this process (loopback gRPC) and reports the bus bandwidth,
// 2(N-1)/N * S / time, as nccl-tests defines it.
func BenchmarkAllReduce(b *testing.B) {
	for _, n := range []int{2, 4} {
		for _, mib := range []int{1, 16} {
			b.Run(fmt.Sprintf("N=%d/%dMiB", n, mib), func(b *testing.B) {
				benchAllReduce(b, n, mib<<20, Config{})
			})
		}
	}
}

func benchAllReduce(b *testing.B, n, size int, cfg Config) {
	nodes := ring(b, n, cfg)
	bufs := make([][]float32, n)
	for r := range bufs {
		bufs[r] = make([]float32, size/4)
		for j := range bufs[r] {
			bufs[r][j] = float32(r + j%7)
		}
	}
	// Ranks 1..n-1 run in helper goroutines driven by channels.
	start := make([]chan struct{}, n)
	done := make(chan error, n)
	var wg sync.WaitGroup
	for r := 1; r < n; r++ {
		start[r] = make(chan struct{})
		wg.Go(func() {
			for range start[r] {
				done <- nodes[r].g.AllReduce(context.Background(), bufs[r])
			}
		})
	}
	defer wg.Wait()
	defer func() {
		for r := 1; r < n; r++ {
			close(start[r])
		}
	}()
	run := func() {
		for r := 1; r < n; r++ {
			start[r] <- struct{}{}
		}
		if err := nodes[0].g.AllReduce(context.Background(), bufs[0]); err != nil {
			b.Fatal(err)
		}
		for r := 1; r < n; r++ {
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		}
	}
	run() // connect
	b.SetBytes(int64(size))
	b.ResetTimer()
	for b.Loop() {
		run()
	}
	sec := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(float64(2*(n-1))/float64(n)*float64(size)/sec/1e9, "busGB/s")
}

// BenchmarkAllReduceChunk sweeps Config.ChunkBytes (the default was picked
// from it).
func BenchmarkAllReduceChunk(b *testing.B) {
	for _, n := range []int{2, 4} {
		for _, kib := range []int{64, 128, 256, 512, 1024, 2048} {
			b.Run(fmt.Sprintf("N=%d/16MiB/chunk=%dKiB", n, kib), func(b *testing.B) {
				benchAllReduce(b, n, 16<<20, Config{ChunkBytes: kib << 10})
			})
		}
	}
}
