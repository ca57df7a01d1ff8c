package allreduce

import (
	"context"
	"crypto/hmac"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// ringState is one generation of the ring on this member. It owns a worker
// goroutine (runs the operations in seq order and receives), a sender
// goroutine (the one long-lived Push stream to the successor), and, once the
// predecessor's stream arrives, a reader goroutine under the Push handler.
// Any error fails the whole generation: its context is cancelled, which
// tears down both streams, so the neighbours fail at once too.
type ringState struct {
	m          *Member
	ring       Ring
	n          int
	prev, next int
	conn       *grpc.ClientConn // to the successor; shared across generations
	ctx        context.Context
	cancel     context.CancelCauseFunc

	mu       sync.Mutex
	err      error // first failure; set before ctx is cancelled
	attached bool  // the predecessor's stream arrived
	nextSeq  uint64
	queue    []*Op // started, not yet run
	head     int
	queued   chan struct{} // cap 1: queue grew

	// Worker <-> reader: received frames and their free list.
	in   chan *inFrame
	free chan *inFrame

	// Worker <-> sender, per operation.
	sendq      chan *Op      // cap 1
	sendDone   chan error    // cap 1
	senderExit chan struct{} // closed when the sender goroutine returns
	recvCount  atomic.Int64
	sendingAt  atomic.Int64  // UnixNano the current send began; 0 when not sending
	recvNotify chan struct{} // cap 1: recvCount grew
	// sent counts the current operation's chunks that gRPC has written out
	// (and so no longer reads from the buffer, which it sends without
	// copying): the release of every message is reported here.
	sent releaseCounter
}

func newRingState(m *Member, r Ring, conn *grpc.ClientConn) *ringState {
	n := len(r.Addrs)
	ctx, cancel := context.WithCancelCause(context.Background())
	st := &ringState{
		m: m, ring: r, n: n,
		prev: (r.Rank + n - 1) % n, next: (r.Rank + 1) % n,
		conn: conn, ctx: ctx, cancel: cancel,
		queued:     make(chan struct{}, 1),
		in:         make(chan *inFrame, framePoolSize),
		free:       make(chan *inFrame, framePoolSize),
		sendq:      make(chan *Op, 1),
		sendDone:   make(chan error, 1),
		senderExit: make(chan struct{}),
		recvNotify: make(chan struct{}, 1),
		sent:       releaseCounter{notify: make(chan struct{}, 1), sender: make(chan struct{}, 1)},
	}
	for range framePoolSize {
		st.free <- &inFrame{RingFrame: new(pb.RingFrame)}
	}
	return st
}

func (st *ringState) start() {
	if st.n == 1 {
		return
	}
	st.m.wg.Add(2)
	go st.worker()
	go st.sender()
}

func (st *ringState) peer(rank int, err error) error {
	return &PeerError{Rank: rank, Addr: st.ring.Addrs[rank], Err: err}
}

// fail records the generation's first error and cancels it.
func (st *ringState) fail(err error) {
	st.mu.Lock()
	first := st.err == nil
	if first {
		st.err = err
	}
	st.mu.Unlock()
	if first {
		if !errors.Is(err, ErrSuperseded) && !errors.Is(err, ErrClosed) {
			st.m.log.Warn("ring generation failed", "job", st.ring.JobID, "generation", st.ring.Generation, "rank", st.ring.Rank, "err", err)
		}
		st.cancel(err)
	}
}

// failure is the error for operations that fail because the generation did.
func (st *ringState) failure() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return &generationError{job: st.ring.JobID, generation: st.ring.Generation, err: st.err}
}

// enqueue queues op in this generation, or fails it at once if the
// generation has ended (superseded, closed or failed). A ring of one sums
// nothing: op succeeds at once while the generation is current.
func (st *ringState) enqueue(op *Op) {
	st.mu.Lock()
	if st.err != nil {
		err := &generationError{job: st.ring.JobID, generation: st.ring.Generation, err: st.err}
		st.mu.Unlock()
		op.done <- err
		return
	}
	if st.n == 1 {
		st.mu.Unlock()
		op.done <- nil
		return
	}
	st.nextSeq++
	op.seq = st.nextSeq
	st.queue = append(st.queue, op)
	st.mu.Unlock()
	select {
	case st.queued <- struct{}{}:
	default:
	}
}

// dequeue pops the next operation, or returns nil if there is none or the
// generation failed (then it fails every queued operation).
func (st *ringState) dequeue() *Op {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.err != nil {
		for i := st.head; i < len(st.queue); i++ {
			st.queue[i].done <- &generationError{job: st.ring.JobID, generation: st.ring.Generation, err: st.err}
			st.queue[i] = nil
		}
		st.queue, st.head = st.queue[:0], 0
		return nil
	}
	if st.head == len(st.queue) {
		return nil
	}
	op := st.queue[st.head]
	st.queue[st.head] = nil
	st.head++
	if st.head == len(st.queue) {
		st.queue, st.head = st.queue[:0], 0
	}
	return op
}

func (st *ringState) worker() {
	defer st.m.wg.Done()
	timer := time.NewTimer(st.m.cfg.Timeout)
	defer timer.Stop()
	for {
		op := st.dequeue()
		if op == nil {
			select {
			case <-st.queued:
				continue
			case <-st.ctx.Done():
				st.dequeue() // fails what is left; nothing can be queued any more
				return
			}
		}
		if err := st.run(op, timer); err != nil {
			st.fail(err)
			// The sender may still be reading op.buf: the caller gets the
			// buffer back only once it has stopped (the failed generation's
			// cancelled stream makes that prompt).
			select {
			case <-st.sendDone:
			case <-st.senderExit:
			}
			op.done <- err
			continue
		}
		op.done <- nil
	}
}

// stepStart returns the number of chunks received (equally, sent at the
// following step) before step s.
func (st *ringState) stepStart(p plan, s int) int64 {
	var k int64
	for i := 0; i < s; i++ {
		k += int64(p.chunks(p.recvSeg(i)))
	}
	return k
}

// run performs one operation: it hands the send side to the sender and
// receives here, adding (reduce-scatter) or copying (all-gather) each chunk.
func (st *ringState) run(op *Op, timer *time.Timer) error {
	if len(op.buf) == 0 {
		return nil
	}
	p := plan{n: st.n, rank: st.ring.Rank, length: len(op.buf), chunk: st.m.cfg.ChunkBytes / 4}
	st.recvCount.Store(0)
	st.sent.count.Store(0)
	st.sendq <- op // the sender is idle: it finished the previous operation
	opDone := op.ctx.Done()
	timeout := st.m.cfg.Timeout
	timer.Reset(timeout)
	for s := range p.steps() {
		seg := p.recvSeg(s)
		nc := p.chunks(seg)
		// Chunks written in the all-gather were read by the send of step
		// s-(N-1); the ring orders them, but wait for it here too so that the
		// order is visible in this process (and to the race detector).
		var sentBase int64 = -1
		if s >= p.n-1 {
			sentBase = 0
			if k := s - (p.n - 1); k > 0 {
				sentBase = st.stepStart(p, k-1)
			}
		}
		for c := range nc {
			lo, hi := p.chunkAt(seg, c)
			var f *inFrame
			select {
			case f = <-st.in:
				if f == nil {
					return st.peer(st.prev, fmt.Errorf("%w: predecessor closed its stream before op %d step %d", ErrPeerLeft, op.seq, s))
				}
			case <-timer.C:
				// If our own send has been stuck as long, the ring is stalled
				// downstream (the successor is not reading): blame it.
				if at := st.sendingAt.Load(); at != 0 && time.Since(time.Unix(0, at)) >= timeout {
					return st.peer(st.next, fmt.Errorf("%w: not accepting data for %v (op %d, step %d)", ErrTimeout, timeout, op.seq, s))
				}
				return st.peer(st.prev, fmt.Errorf("%w: no data for %v (op %d, step %d)", ErrTimeout, timeout, op.seq, s))
			case <-st.ctx.Done():
				return context.Cause(st.ctx)
			case <-opDone:
				return fmt.Errorf("allreduce: op %d: %w", op.seq, context.Cause(op.ctx))
			}
			if f.Seq != op.seq || f.Step != uint32(s) || f.Offset != uint64(lo) || f.Length != uint64(p.length) || f.dataLen != 4*(hi-lo) {
				err := st.peer(st.prev, fmt.Errorf("%w: got op %d step %d offset %d length %d with %d bytes, want op %d step %d offset %d length %d with %d bytes",
					ErrFenced, f.Seq, f.Step, f.Offset, f.Length, f.dataLen, op.seq, s, lo, p.length, 4*(hi-lo)))
				f.release()
				st.free <- f
				return err
			}
			if sentBase >= 0 {
				for need := sentBase + int64(c) + 1; st.sent.count.Load() < need; {
					select {
					case <-st.sent.notify:
					case <-timer.C:
						return st.peer(st.next, fmt.Errorf("%w: not accepting data for %v (op %d, step %d)", ErrTimeout, timeout, op.seq, s))
					case <-st.ctx.Done():
						return context.Cause(st.ctx)
					}
				}
			}
			f.applyFrame(op.buf[lo:hi], s < p.n-1)
			f.release()
			st.free <- f
			st.recvCount.Add(1)
			select {
			case st.recvNotify <- struct{}{}:
			default:
			}
			timer.Reset(timeout)
		}
	}
	for {
		select {
		case err := <-st.sendDone:
			return err
		case <-st.sent.notify:
			timer.Reset(timeout)
		case <-timer.C:
			return st.peer(st.next, fmt.Errorf("%w: not accepting data for %v (op %d)", ErrTimeout, timeout, op.seq))
		case <-st.ctx.Done():
			return context.Cause(st.ctx)
		case <-opDone:
			return fmt.Errorf("allreduce: op %d: %w", op.seq, context.Cause(op.ctx))
		}
	}
}

// sender opens the generation's stream to the successor and then sends the
// chunks of each operation as soon as the chunk they depend on has arrived.
func (st *ringState) sender() {
	defer st.m.wg.Done()
	defer close(st.senderExit)
	// The stream has its own context. When the generation ends — normally
	// or not — the stream is half-closed rather than cancelled, so frames
	// still in flight reach the successor, which may need them to finish
	// its last operation (a rank may close right after its own); the
	// successor sees the end of the stream and fails at once only if it
	// needs more. Only a send blocked in flow control is cancelled at once;
	// a half-close gets Timeout at most.
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	stopAfter := context.AfterFunc(st.ctx, func() {
		if st.sendingAt.Load() != 0 || st.m.aborted.Load() {
			scancel()
		} else {
			time.AfterFunc(st.m.cfg.Timeout, scancel)
		}
	})
	defer stopAfter()
	client := pb.NewAllReduceRingClient(st.conn)
	// MaxRetryRPCBufferSize(0): gRPC keeps sent messages for a transparent
	// retry until the stream is committed (a client stream: until 256 KiB
	// have gone); with 0 the hello commits it, so every message is let go
	// of as soon as it is written (we send them from the caller's buffer).
	stream, err := client.Push(sctx, grpc.CallContentSubtype(codecName), grpc.WaitForReady(true), grpc.MaxRetryRPCBufferSize(0))
	if err == nil {
		err = st.hello(stream, scancel)
	}
	if err != nil {
		st.fail(st.peer(st.next, fmt.Errorf("open stream: %w", st.streamErr(stream, err))))
		return
	}
	out := &outFrame{jobID: st.ring.JobID, generation: st.ring.Generation, senderRank: int32(st.ring.Rank), release: &st.sent}
	st.sent.view = &out.view
	for {
		select {
		case op := <-st.sendq:
			issued, err := st.send(stream, out, op)
			out.data, out.view = nil, nil
			if err != nil {
				st.fail(err)
				st.drain(issued, scancel)
				st.sendDone <- err
				halfClose(stream)
				return
			}
			st.sendDone <- nil
		case <-st.ctx.Done():
			if st.m.aborted.Load() {
				scancel()
			} else {
				halfClose(stream)
			}
			return
		}
	}
}

// hello sends the generation's hello, signed over the connection's
// binding, and, with NextAcceptKey, waits (Timeout at most; then the stream
// is cancelled) for the successor's answer and checks it.
func (st *ringState) hello(stream grpc.ClientStreamingClient[pb.RingFrame, pb.RingAck], cancel context.CancelFunc) error {
	binding, err := ChannelBinding(stream.Context())
	if err != nil {
		return err
	}
	r := st.ring
	hello := &outFrame{jobID: r.JobID, generation: r.Generation, senderRank: int32(r.Rank)}
	if len(r.SendKey) > 0 {
		hello.mac = HelloMAC(r.SendKey, r.JobID, r.Generation, r.Rank, st.next, binding)
	}
	if err := stream.SendMsg(hello); err != nil {
		return err
	}
	if len(r.NextAcceptKey) == 0 {
		return nil
	}
	t := time.AfterFunc(st.m.cfg.Timeout, cancel)
	md, err := stream.Header()
	stopped := t.Stop()
	if err != nil {
		return err
	}
	if md == nil { // the stream ended: its status says why
		if !stopped {
			return fmt.Errorf("no answer to the hello within %v", st.m.cfg.Timeout)
		}
		return io.EOF
	}
	want := AcceptMAC(r.NextAcceptKey, r.JobID, r.Generation, r.Rank, st.next, binding)
	got := md.Get(acceptHeader)
	if len(got) != 1 || !hmac.Equal([]byte(got[0]), []byte(hex.EncodeToString(want))) {
		cancel()
		st.m.refused.Add(1)
		return fmt.Errorf("%w: rank %d did not answer the hello with its accept key: not the assigned successor, or a relay between us", ErrFenced, st.next)
	}
	return nil
}

// halfClose ends a stream and returns once the successor has read all of it
// (or the stream broke).
func halfClose(stream grpc.ClientStreamingClient[pb.RingFrame, pb.RingAck]) {
	var ack pb.RingAck
	if stream.CloseSend() == nil {
		stream.RecvMsg(&ack)
	}
}

// streamErr turns the io.EOF of a refused stream into the server's status,
// marking the answers of a live peer that ended the generation itself
// (Aborted: its generation failed; FailedPrecondition: not its generation)
// with ErrPeerLeft.
func (st *ringState) streamErr(stream grpc.ClientStreamingClient[pb.RingFrame, pb.RingAck], err error) error {
	if errors.Is(err, io.EOF) && stream != nil {
		var ack pb.RingAck
		if rerr := stream.RecvMsg(&ack); rerr != nil && !errors.Is(rerr, io.EOF) {
			err = rerr
		} else {
			return fmt.Errorf("%w: stream closed by peer", ErrPeerLeft)
		}
	}
	switch status.Code(err) {
	case codes.Aborted, codes.FailedPrecondition:
		return fmt.Errorf("%w: %w", ErrPeerLeft, err)
	}
	return err
}

// send sends the chunks of op and returns once gRPC has written them all
// out (it reads them from op.buf without copying), or the number it handed
// to gRPC before it failed.
func (st *ringState) send(stream grpc.ClientStreamingClient[pb.RingFrame, pb.RingAck], out *outFrame, op *Op) (issued int64, err error) {
	p := plan{n: st.n, rank: st.ring.Rank, length: len(op.buf), chunk: st.m.cfg.ChunkBytes / 4}
	out.seq, out.length = op.seq, uint64(p.length)
	var base int64 // chunks received before step s-1
	for s := range p.steps() {
		seg := p.sendSeg(s)
		for c := range p.chunks(seg) {
			if s > 0 {
				for need := base + int64(c) + 1; st.recvCount.Load() < need; {
					select {
					case <-st.recvNotify:
					case <-st.ctx.Done():
						return issued, context.Cause(st.ctx)
					}
				}
			}
			// Publish that a send is under way before checking for the end
			// of the generation, so that the end either sees it (and
			// cancels the stream) or this check sees the end.
			st.sendingAt.Store(time.Now().UnixNano())
			if st.ctx.Err() != nil {
				st.sendingAt.Store(0)
				return issued, context.Cause(st.ctx)
			}
			if h := st.m.testSendHook; h != nil {
				h(op.seq, s)
			}
			lo, hi := p.chunkAt(seg, c)
			out.step, out.offset, out.data = uint32(s), uint64(lo), op.buf[lo:hi]
			err := stream.SendMsg(out)
			st.sendingAt.Store(0)
			if err != nil {
				// A message SendMsg refused may or may not have been
				// queued: count it, drain waits for it either way.
				return issued + 1, st.peer(st.next, fmt.Errorf("send op %d step %d: %w", op.seq, s, st.streamErr(stream, err)))
			}
			issued++
		}
		if s > 0 {
			base += int64(p.chunks(p.recvSeg(s - 1)))
		}
	}
	for st.sent.count.Load() < issued {
		select {
		case <-st.sent.sender:
		case <-st.ctx.Done():
			return issued, context.Cause(st.ctx)
		}
	}
	return issued, nil
}

// drain waits, after a failed send, until gRPC has let go of every message
// it was handed (it reads them from the caller's buffer), so that the
// operation's buffer can be given back. It cancels the stream, which makes
// gRPC drop what it has not written; if the connection itself broke, gRPC
// may drop messages without reporting them, so it also stops when the
// connection leaves READY, and in any case after Timeout.
func (st *ringState) drain(issued int64, cancelStream context.CancelFunc) {
	if st.sent.count.Load() >= issued {
		return
	}
	cancelStream()
	ctx, cancel := context.WithTimeout(context.Background(), st.m.cfg.Timeout)
	defer cancel()
	broken := make(chan struct{})
	go func() {
		defer close(broken)
		if st.conn.GetState() == connectivity.Ready {
			st.conn.WaitForStateChange(ctx, connectivity.Ready)
		}
	}()
	defer func() { cancel(); <-broken }()
	for st.sent.count.Load() < issued {
		select {
		case <-st.sent.sender:
		case <-broken:
			return
		case <-ctx.Done():
			st.m.log.Warn("ring stream did not release its buffers", "job", st.ring.JobID, "generation", st.ring.Generation, "peer", st.ring.Addrs[st.next], "released", st.sent.count.Load(), "issued", issued)
			return
		}
	}
}
