package allreduce

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// sink is a fake ring member that accepts a Push stream and drops it.
type sink struct {
	pb.UnimplementedAllReduceRingServer
}

func (sink) Push(stream pb.AllReduceRing_PushServer) error {
	for {
		if _, err := stream.Recv(); err != nil {
			return nil
		}
	}
}

// fakePeer serves a sink on 127.0.0.1:0 and returns its address.
func fakePeer(t *testing.T) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterAllReduceRingServer(srv, sink{})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// push opens a Push stream to addr with the ordinary proto codec, as any
// protobuf client would.
func push(t *testing.T, addr string) pb.AllReduceRing_PushClient {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := pb.NewAllReduceRingClient(conn).Push(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

func TestStaleGenerationRefused(t *testing.T) {
	nodes := startNodes(t, 1, Config{Timeout: 300 * time.Millisecond})
	m := nodes[0]
	peer := fakePeer(t)
	// The member is rank 1 of a 2-ring at generation 2; the test plays rank 0.
	g, err := m.m.SetRing(Ring{JobID: "job", Generation: 2, Rank: 1, Addrs: []string{peer, m.addr}})
	if err != nil {
		t.Fatal(err)
	}
	m.g = g
	for _, tc := range []struct {
		name  string
		hello *pb.RingFrame
	}{
		{"stale generation", &pb.RingFrame{JobId: "job", Generation: 1, SenderRank: 0}},
		{"other job", &pb.RingFrame{JobId: "other", Generation: 2, SenderRank: 0}},
		{"wrong predecessor", &pb.RingFrame{JobId: "job", Generation: 2, SenderRank: 1}},
	} {
		before := m.m.Refused()
		stream := push(t, m.addr)
		if err := stream.Send(tc.hello); err != nil {
			t.Fatal(err)
		}
		_, err := stream.CloseAndRecv()
		if status.Code(err) != codes.FailedPrecondition {
			t.Errorf("%s: got %v, want FailedPrecondition", tc.name, err)
		}
		if m.m.Refused() != before+1 {
			t.Errorf("%s: refused count %d, want %d", tc.name, m.m.Refused(), before+1)
		}
	}

	// A stale frame on an accepted stream is refused and fails the operation.
	stream := push(t, m.addr)
	if err := stream.Send(&pb.RingFrame{JobId: "job", Generation: 2, SenderRank: 0}); err != nil {
		t.Fatal(err)
	}
	op := m.g.Start(context.Background(), make([]float32, 8))
	before := m.m.Refused()
	if err := stream.Send(&pb.RingFrame{JobId: "job", Generation: 1, SenderRank: 0, Seq: 1, Length: 8, Data: make([]byte, 16)}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("stale frame: got %v, want FailedPrecondition", err)
	}
	err = op.Wait()
	if !errors.Is(err, ErrFenced) {
		t.Errorf("operation: got %v, want ErrFenced", err)
	}
	var pe *PeerError
	if !errors.As(err, &pe) || pe.Rank != 0 {
		t.Errorf("operation error does not name rank 0: %v", err)
	}
	if m.m.Refused() != before+1 {
		t.Errorf("refused count %d, want %d", m.m.Refused(), before+1)
	}
}

// A stream that never sends its hello frame is ended after the timeout
// (it would otherwise hold a goroutine for ever), and counted as refused;
// so is one closed before its hello.
func TestSilentStreamEnded(t *testing.T) {
	nodes := startNodes(t, 1, Config{Timeout: 300 * time.Millisecond})
	m := nodes[0]
	before := m.m.Refused()
	if _, err := push(t, m.addr).CloseAndRecv(); err == nil {
		t.Error("a stream closed before its hello was accepted")
	}
	silent := push(t, m.addr) // open, and never a frame
	start := time.Now()
	var ack pb.RingAck
	err := silent.RecvMsg(&ack)
	if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "no hello frame") {
		t.Fatalf("silent stream: %v after %v, want DeadlineExceeded", err, time.Since(start))
	}
	if got := m.m.Refused(); got != before+2 {
		t.Errorf("refused count %d, want %d (the closed and the silent stream)", got, before+2)
	}
}

// With ring keys, a ring whose members sign their hellos sums as before,
// and a stream whose hello is unsigned, signed with another key, or signed
// for another rank is refused and counted, even with the right fence.
func TestHelloSigned(t *testing.T) {
	key := func(i int) []byte { return []byte(fmt.Sprintf("key of rank %d, 32 bytes long....", i)) }
	nodes := startNodes(t, 3, Config{Timeout: 2 * time.Second})
	addrs := []string{nodes[0].addr, nodes[1].addr, nodes[2].addr}
	for i, nd := range nodes {
		g, err := nd.m.SetRing(Ring{JobID: "job", Generation: 1, Rank: i, Addrs: addrs, SendKey: key(i), RecvKey: key((i + 2) % 3)})
		if err != nil {
			t.Fatal(err)
		}
		nd.g = g
	}
	bufs, want := inputs(3, 1000, 7)
	for _, err := range allReduce(nodes, bufs) {
		if err != nil {
			t.Fatal(err)
		}
	}
	checkSum(t, bufs, want)

	// Rank 2 expects rank 1's stream; rank 1's is attached already, so use
	// a fresh member as the victim: rank 1 of a 2-ring whose predecessor
	// (the test) is rank 0 with key(0).
	victim := startNodes(t, 1, Config{Timeout: 2 * time.Second})[0]
	g, err := victim.m.SetRing(Ring{JobID: "job", Generation: 5, Rank: 1, Addrs: []string{fakePeer(t), victim.addr}, RecvKey: key(0)})
	if err != nil {
		t.Fatal(err)
	}
	victim.g = g
	for _, c := range []struct {
		name string
		mac  []byte
	}{
		{"unsigned", nil},
		{"another key", HelloMAC(key(9), "job", 5, 0, 1, nil)},
		{"signed for another receiver", HelloMAC(key(0), "job", 5, 0, 2, nil)},
		{"signed for another generation", HelloMAC(key(0), "job", 4, 0, 1, nil)},
	} {
		before := victim.m.Refused()
		stream := push(t, victim.addr)
		if err := stream.Send(&pb.RingFrame{JobId: "job", Generation: 5, SenderRank: 0, Mac: c.mac}); err != nil {
			t.Fatal(err)
		}
		_, err := stream.CloseAndRecv()
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "not signed with my predecessor's ring key") {
			t.Errorf("%s hello: %v, want FailedPrecondition naming the key", c.name, err)
		}
		if victim.m.Refused() != before+1 {
			t.Errorf("%s hello: refused count %d, want %d", c.name, victim.m.Refused(), before+1)
		}
	}
	// The right signature is let in: a second stream, signed as well, is
	// then refused as the generation's second (the first one attached).
	signed := &pb.RingFrame{JobId: "job", Generation: 5, SenderRank: 0, Mac: HelloMAC(key(0), "job", 5, 0, 1, nil)}
	if err := push(t, victim.addr).Send(signed); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "the signed stream attached", func() bool {
		second := push(t, victim.addr)
		if err := second.Send(signed); err != nil {
			return false
		}
		_, err := second.CloseAndRecv()
		return strings.Contains(fmt.Sprint(err), "second stream")
	})
}

func TestGarbageFrame(t *testing.T) {
	nodes := startNodes(t, 1, Config{Timeout: 5 * time.Second})
	m := nodes[0]
	g, err := m.m.SetRing(Ring{JobID: "job", Generation: 1, Rank: 1, Addrs: []string{fakePeer(t), m.addr}})
	if err != nil {
		t.Fatal(err)
	}
	m.g = g
	stream := push(t, m.addr)
	if err := stream.Send(&pb.RingFrame{JobId: "job", Generation: 1, SenderRank: 0}); err != nil {
		t.Fatal(err)
	}
	op := m.g.Start(context.Background(), make([]float32, 8))
	// Right fence, wrong size.
	if err := stream.Send(&pb.RingFrame{JobId: "job", Generation: 1, SenderRank: 0, Seq: 1, Length: 8, Data: make([]byte, 3)}); err != nil {
		t.Fatal(err)
	}
	if err := op.Wait(); !errors.Is(err, ErrFenced) {
		t.Errorf("got %v, want ErrFenced", err)
	}
}

func TestSetRingSupersedes(t *testing.T) {
	nodes := startNodes(t, 1, Config{Timeout: 5 * time.Second})
	m := nodes[0].m
	peer := fakePeer(t)
	g1, err := m.SetRing(Ring{JobID: "job", Generation: 1, Rank: 0, Addrs: []string{nodes[0].addr, peer}})
	if err != nil {
		t.Fatal(err)
	}
	op := g1.Start(context.Background(), make([]float32, 100))
	if _, err := m.SetRing(Ring{JobID: "job", Generation: 1, Rank: 0, Addrs: []string{nodes[0].addr, peer}}); err == nil {
		t.Error("SetRing accepted the same generation again")
	}
	g2, err := m.SetRing(Ring{JobID: "job", Generation: 2, Rank: 0, Addrs: []string{nodes[0].addr}})
	if err != nil {
		t.Fatal(err)
	}
	if err := op.Wait(); !errors.Is(err, ErrSuperseded) {
		t.Errorf("in-flight op of the old generation: got %v, want ErrSuperseded", err)
	}
	if err := g1.AllReduce(context.Background(), make([]float32, 4)); !errors.Is(err, ErrSuperseded) {
		t.Errorf("op started on the old generation after the switch: got %v, want ErrSuperseded", err)
	}
	if !errors.Is(g1.Err(), ErrSuperseded) || g2.Err() != nil {
		t.Errorf("Err: old %v, current %v", g1.Err(), g2.Err())
	}
	buf := []float32{1, 2}
	if err := g2.AllReduce(context.Background(), buf); err != nil || buf[0] != 1 || buf[1] != 2 {
		t.Errorf("N=1 all-reduce: %v %v", buf, err)
	}
	// A ring of one is superseded like any other.
	if _, err := m.SetRing(Ring{JobID: "job", Generation: 3, Rank: 0, Addrs: []string{nodes[0].addr}}); err != nil {
		t.Fatal(err)
	}
	if err := g2.AllReduce(context.Background(), buf); !errors.Is(err, ErrSuperseded) {
		t.Errorf("N=1 op on a superseded generation: got %v, want ErrSuperseded", err)
	}
	g4, err := m.SetRing(Ring{JobID: "job", Generation: 4, Rank: 0, Addrs: []string{nodes[0].addr}})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if err := g4.AllReduce(context.Background(), buf); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: got %v, want ErrClosed", err)
	}
}

// TestGenerationsNeverMix forces the interleaving that broke the cluster: a
// rank is switched to generation 2 between two buckets of a step it began
// in generation 1, while its peer has already begun generation 2 with an
// operation of another length (the new generation's sync). The rest of the
// old step must fail with ErrSuperseded without a frame reaching the new
// ring, and generation 2's own operations must then run cleanly.
func TestGenerationsNeverMix(t *testing.T) {
	nodes := startNodes(t, 2, Config{Timeout: 5 * time.Second})
	setRing(t, nodes, "job", 1)
	a, b := nodes[0], nodes[1]
	old := a.g
	// Step in generation 1: the first bucket completes on both ranks.
	bufs, want := inputs(2, 1000, 1)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	wg.Go(func() { errs[0] = old.AllReduce(context.Background(), bufs[0]) })
	wg.Go(func() { errs[1] = b.g.AllReduce(context.Background(), bufs[1]) })
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatal(errs)
	}
	checkSum(t, bufs, want)
	// The switch lands between this step's buckets.
	setRing(t, nodes, "job", 2)
	refusedBefore := a.m.Refused() + b.m.Refused()
	// Peer b begins generation 2 with a 2-element sync.
	syncB := []float32{0, 7}
	done := make(chan error, 1)
	go func() { done <- b.g.AllReduce(context.Background(), syncB) }()
	// Rank a, still in its generation-1 step, starts its next bucket.
	if err := old.Start(context.Background(), make([]float32, 313600)).Wait(); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("bucket of the old step: got %v, want ErrSuperseded", err)
	}
	// Then a syncs in generation 2: the peer sees a's sync, not the bucket.
	syncA := []float32{5, 0}
	if err := a.g.AllReduce(context.Background(), syncA); err != nil {
		t.Fatalf("generation 2 sync on a: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("generation 2 sync on b: %v", err)
	}
	if syncA[0] != 5 || syncA[1] != 7 || syncB[0] != 5 || syncB[1] != 7 {
		t.Errorf("sync sums: a %v, b %v, want [5 7]", syncA, syncB)
	}
	if r := a.m.Refused() + b.m.Refused() - refusedBefore; r != 0 {
		t.Errorf("%d frames or streams refused: the old step reached the new ring", r)
	}
}

func TestCloseNoLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	nodes := startNodes(t, 3, Config{ChunkBytes: 8 << 10})
	for gen := uint64(1); gen <= 3; gen++ {
		setRing(t, nodes, "job", gen)
		bufs, want := inputs(3, 50000, gen)
		if errs := allReduce(nodes, bufs); errors.Join(errs...) != nil {
			t.Fatal(errs)
		}
		checkSum(t, bufs, want)
	}
	// Leave one operation in flight on rank 0 only, then close everything.
	op := nodes[0].g.Start(context.Background(), make([]float32, 1000))
	closeAll(nodes)
	if err := op.Wait(); err == nil {
		t.Error("in-flight operation succeeded after Close")
	}
	checkNoLeak(t, base)
}

func TestCodecRoundTrip(t *testing.T) {
	out := &outFrame{jobID: "j", generation: 7, senderRank: 3, seq: 9, step: 2, offset: 11, length: 99, data: []float32{1.5, -2, 3e-9}}
	bs, err := frameCodec{}.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	raw := bs.Materialize()
	bs.Free()
	var std pb.RingFrame
	if err := proto.Unmarshal(raw, &std); err != nil {
		t.Fatal(err)
	}
	want := &pb.RingFrame{JobId: "j", Generation: 7, SenderRank: 3, Seq: 9, Step: 2, Offset: 11, Length: 99, Data: make([]byte, 12)}
	encodeFloats(want.Data, out.data)
	if !proto.Equal(&std, want) {
		t.Fatalf("proto decode of our encoding: %v, want %v", &std, want)
	}
	var got pb.RingFrame
	std2, _ := proto.Marshal(want)
	if err := decodeFrame(std2, &got, false); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, want) {
		t.Fatalf("our decode of proto encoding: %v, want %v", &got, want)
	}
	if err := decodeFrame([]byte{0xff}, &got, false); err == nil {
		t.Error("garbage decoded without error")
	}
}

func TestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	nodes := ring(t, 2, Config{ChunkBytes: 64 << 10})
	a, b := make([]float32, 1<<18), make([]float32, 1<<18) // 1 MiB, 8 chunks per segment
	start, done := make(chan struct{}), make(chan error)
	var wg sync.WaitGroup
	wg.Go(func() {
		for range start {
			done <- nodes[1].g.AllReduce(context.Background(), b)
		}
	})
	defer wg.Wait()
	defer close(start)
	run := func() {
		start <- struct{}{}
		if err := nodes[0].g.AllReduce(context.Background(), a); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for range 20 {
		run()
	}
	allocs := testing.AllocsPerRun(50, run)
	// Per operation each rank sends 2 steps x 8 chunks = 16 frames, 32 in
	// all. Our code allocates nothing per operation; gRPC allocates a few
	// small objects per message (the transport's frame readers and writers,
	// the message header, and the one-element mem.BufferSlice our codec must
	// return), about 7 per frame counting both ends.
	const frames = 32
	t.Logf("%.1f allocations per all-reduce of 1 MiB on a 2-ring in one process (%.1f per frame, both ends)", allocs, allocs/frames)
	if allocs > 10*frames {
		t.Errorf("%.1f allocations per operation, more than 10 per frame", allocs)
	}
}

// TestCodecPieces decodes frames spread over transport buffers cut at every
// awkward place (values split across buffers, misaligned buffers), from our
// encoder and from the generic protobuf one, and applies them in place.
func TestCodecPieces(t *testing.T) {
	vals := make([]float32, 1500) // above minAliasBytes: the aliasing path
	for i := range vals {
		vals[i] = float32(i)*0.25 - 100
	}
	rel := &releaseCounter{notify: make(chan struct{}, 1), sender: make(chan struct{}, 1)}
	out := &outFrame{jobID: "job-7", generation: 3, senderRank: 1, seq: 5, step: 2, offset: 10, length: 4000, data: vals, release: rel}
	rel.view = &out.view
	bs, err := frameCodec{}.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 2 {
		t.Fatalf("large frame marshalled into %d buffers, want header + aliased data", len(bs))
	}
	ours := bs.Materialize()
	bs.Free()
	if got := rel.count.Load(); got != 1 {
		t.Fatalf("release reported %d times, want 1", got)
	}
	std := &pb.RingFrame{JobId: "job-7", Generation: 3, SenderRank: 1, Seq: 5, Step: 2, Offset: 10, Length: 4000, Data: make([]byte, 4*len(vals))}
	encodeFloats(std.Data, vals)
	generic, err := proto.Marshal(std)
	if err != nil {
		t.Fatal(err)
	}
	for name, msg := range map[string][]byte{"ours": ours, "protobuf": generic} {
		for _, cut := range []int{1, 3, 7, 16, 1001, 4096, len(msg)} {
			// Each piece starts at an odd address inside its own allocation.
			var pieces mem.BufferSlice
			for lo := 0; lo < len(msg); lo += cut {
				hi := min(lo+cut, len(msg))
				b := make([]byte, hi-lo+1)
				copy(b[1:], msg[lo:hi])
				pieces = append(pieces, mem.SliceBuffer(b[1:]))
			}
			in := &inFrame{RingFrame: new(pb.RingFrame)}
			if err := (frameCodec{}).Unmarshal(pieces, in); err != nil {
				t.Fatalf("%s cut %d: %v", name, cut, err)
			}
			if in.JobId != "job-7" || in.Generation != 3 || in.SenderRank != 1 || in.Seq != 5 || in.Step != 2 || in.Offset != 10 || in.Length != 4000 || in.dataLen != 4*len(vals) {
				t.Fatalf("%s cut %d: header %v dataLen %d", name, cut, in.RingFrame, in.dataLen)
			}
			sum := make([]float32, len(vals))
			for i := range sum {
				sum[i] = 1
			}
			in.applyFrame(sum, true)
			cp := make([]float32, len(vals))
			in.applyFrame(cp, false)
			for i := range vals {
				if sum[i] != vals[i]+1 || cp[i] != vals[i] {
					t.Fatalf("%s cut %d: element %d: add gave %v, copy %v, want %v and %v", name, cut, i, sum[i], cp[i], vals[i]+1, vals[i])
				}
			}
			in.release()
		}
	}
	in := &inFrame{RingFrame: new(pb.RingFrame)}
	for _, bad := range [][]byte{{0xff}, {0x42, 0x05, 1}, {0x0b}, ours[:len(ours)-1]} {
		if err := (frameCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(bad)}, in); err == nil {
			t.Errorf("garbage % x decoded without error", bad[:min(len(bad), 8)])
		}
	}
}
