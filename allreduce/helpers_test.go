package allreduce

import (
	"context"
	"math"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
)

// node is one in-process ring member with its own gRPC server.
type node struct {
	m    *Member
	g    *Generation // the last SetRing's
	srv  *grpc.Server
	addr string
}

// startNodes starts n members on 127.0.0.1:0 (not yet in a ring).
func startNodes(t testing.TB, n int, cfg Config, srvOpts ...grpc.ServerOption) []*node {
	t.Helper()
	nodes := make([]*node, n)
	for i := range nodes {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer(append(ServerOptions(), srvOpts...)...)
		m, err := NewMember(cfg, srv)
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(lis)
		nodes[i] = &node{m: m, srv: srv, addr: lis.Addr().String()}
	}
	t.Cleanup(func() {
		for _, nd := range nodes {
			nd.m.Close()
			nd.srv.Stop()
		}
	})
	return nodes
}

// setRing puts the nodes in one ring of the given generation.
func setRing(t testing.TB, nodes []*node, job string, gen uint64) {
	t.Helper()
	addrs := make([]string, len(nodes))
	for i, nd := range nodes {
		addrs[i] = nd.addr
	}
	for i, nd := range nodes {
		g, err := nd.m.SetRing(Ring{JobID: job, Generation: gen, Rank: i, Addrs: addrs})
		if err != nil {
			t.Fatal(err)
		}
		nd.g = g
	}
}

// ring starts n members in ring "job" generation 1.
func ring(t testing.TB, n int, cfg Config) []*node {
	t.Helper()
	nodes := startNodes(t, n, cfg)
	setRing(t, nodes, "job", 1)
	return nodes
}

// allReduce runs AllReduce on every rank at once and returns the errors.
func allReduce(nodes []*node, bufs [][]float32) []error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, nd := range nodes {
		wg.Go(func() { errs[i] = nd.g.AllReduce(context.Background(), bufs[i]) })
	}
	wg.Wait()
	return errs
}

// inputs returns n deterministic random buffers of the given length and
// their float64 sum.
func inputs(n, length int, seed uint64) ([][]float32, []float64) {
	r := rand.New(rand.NewPCG(seed, uint64(n)*1000003+uint64(length)))
	bufs := make([][]float32, n)
	want := make([]float64, length)
	for i := range bufs {
		bufs[i] = make([]float32, length)
		for j := range bufs[i] {
			v := float32(r.NormFloat64())
			bufs[i][j] = v
			want[j] += float64(v)
		}
	}
	return bufs, want
}

// checkSum holds every rank's result to the float64 sum (within float32
// rounding of n-1 additions) and all ranks bit-identical to rank 0.
func checkSum(t *testing.T, bufs [][]float32, want []float64) {
	t.Helper()
	n := len(bufs)
	for j, w := range want {
		got := float64(bufs[0][j])
		if tol := float64(n) * 8 * 6e-8 * (math.Abs(w) + 1); math.Abs(got-w) > tol {
			t.Fatalf("element %d: got %v, want %v (±%g)", j, got, w, tol)
		}
	}
	for r := 1; r < n; r++ {
		for j := range bufs[r] {
			if math.Float32bits(bufs[r][j]) != math.Float32bits(bufs[0][j]) {
				t.Fatalf("rank %d element %d = %v, rank 0 has %v: not bit-identical", r, j, bufs[r][j], bufs[0][j])
			}
		}
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, what)
		}
		runtime.Gosched()
		time.Sleep(5 * time.Millisecond)
	}
}

// checkNoLeak waits for the goroutine count to come back to base.
func checkNoLeak(t testing.TB, base int) {
	t.Helper()
	var n int
	eventually(t, 10*time.Second, "goroutines leaked", func() bool {
		n = runtime.NumGoroutine()
		return n <= base
	})
}

// closeAll closes every member and stops every server.
func closeAll(nodes []*node) {
	for _, nd := range nodes {
		nd.m.Close()
		nd.srv.Stop()
	}
}
