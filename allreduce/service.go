package allreduce

import (
	"context"
	"crypto/hmac"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// service is the AllReduceRing server: it accepts the predecessor's Push
// stream and feeds its frames to the current generation's worker.
type service struct {
	pb.UnimplementedAllReduceRingServer
	m *Member
}

func (s *service) Push(stream pb.AllReduceRing_PushServer) error {
	m := s.m
	hello, err := recvHello(stream, m.cfg.Timeout)
	if err != nil {
		m.refused.Add(1)
		m.log.Warn("refused ring stream", "err", err)
		return err
	}
	binding, err := ChannelBinding(stream.Context())
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	st, err := m.attach(stream.Context(), hello, binding)
	if err == nil && len(st.ring.AcceptKey) > 0 {
		mac := AcceptMAC(st.ring.AcceptKey, hello.JobId, hello.Generation, st.prev, st.ring.Rank, binding)
		if herr := stream.SendHeader(metadata.Pairs(acceptHeader, hex.EncodeToString(mac))); herr != nil {
			st.fail(st.peer(st.prev, fmt.Errorf("answer hello: %w", herr)))
			return herr
		}
	}
	if err != nil {
		m.refused.Add(1)
		m.log.Warn("refused ring stream", "job", hello.JobId, "generation", hello.Generation, "sender_rank", hello.SenderRank, "err", err)
		if errors.Is(err, ErrClosed) {
			return status.Error(codes.Unavailable, err.Error())
		}
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	done := make(chan error, 1)
	go st.read(stream, done)
	select {
	case err := <-done:
		if errors.Is(err, io.EOF) {
			return nil // the predecessor left its generation normally
		}
		if err == nil {
			err = errors.New("stream closed")
		}
		if errors.Is(err, ErrFenced) {
			st.fail(st.peer(st.prev, err))
			return status.Error(codes.FailedPrecondition, err.Error())
		}
		st.fail(st.peer(st.prev, fmt.Errorf("receive: %w", err)))
		return status.Error(codes.Aborted, err.Error())
	case <-st.ctx.Done():
		// Returning cancels the stream, which ends read's RecvMsg and tells
		// the predecessor at once.
		return status.Error(codes.Aborted, context.Cause(st.ctx).Error())
	}
}

// recvHello receives a stream's first frame, which must come within
// timeout: a stream opened and left silent would otherwise hold its
// goroutine for ever. Returning ends the stream, which ends the receive.
func recvHello(stream pb.AllReduceRing_PushServer, timeout time.Duration) (*pb.RingFrame, error) {
	hello := new(pb.RingFrame)
	got := make(chan error, 1)
	go func() { got <- stream.RecvMsg(hello) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-got:
		if err != nil {
			return nil, err
		}
		return hello, nil
	case <-t.C:
		return nil, status.Errorf(codes.DeadlineExceeded, "no hello frame within %v", timeout)
	}
}

// attach finds the generation a new stream belongs to. A stream of a newer
// generation (or another job) may arrive before our own SetRing: it waits up
// to Timeout for it.
func (m *Member) attach(ctx context.Context, hello *pb.RingFrame, binding []byte) (*ringState, error) {
	timer := time.NewTimer(m.cfg.Timeout)
	defer timer.Stop()
	for {
		m.mu.Lock()
		st, changed, closed := m.st, m.changed, m.closed
		m.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		if st != nil && st.ring.JobID == hello.JobId {
			if hello.Generation < st.ring.Generation {
				return nil, fmt.Errorf("%w: stale generation %d of job %q, current is %d", ErrFenced, hello.Generation, hello.JobId, st.ring.Generation)
			}
			if hello.Generation == st.ring.Generation {
				if int(hello.SenderRank) != st.prev || st.n == 1 {
					return nil, fmt.Errorf("%w: stream from rank %d, but my predecessor is rank %d", ErrFenced, hello.SenderRank, st.prev)
				}
				if k := st.ring.RecvKey; len(k) > 0 &&
					!hmac.Equal(hello.Mac, HelloMAC(k, hello.JobId, hello.Generation, st.prev, st.ring.Rank, binding)) {
					return nil, fmt.Errorf("%w: hello from rank %d is not signed with my predecessor's ring key over this connection", ErrFenced, hello.SenderRank)
				}
				st.mu.Lock()
				defer st.mu.Unlock()
				if st.err != nil {
					return nil, fmt.Errorf("generation %d already failed: %w", st.ring.Generation, st.err)
				}
				if st.attached {
					return nil, fmt.Errorf("%w: second stream for generation %d", ErrFenced, st.ring.Generation)
				}
				st.attached = true
				return st, nil
			}
		}
		select {
		case <-changed:
		case <-timer.C:
			cur := "none"
			if st != nil {
				cur = fmt.Sprintf("job %q generation %d", st.ring.JobID, st.ring.Generation)
			}
			return nil, fmt.Errorf("%w: job %q generation %d is not ours (%s)", ErrFenced, hello.JobId, hello.Generation, cur)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// read receives frames into the free list's buffers and hands them to the
// worker, refusing any frame not fenced to this generation.
func (st *ringState) read(stream pb.AllReduceRing_PushServer, done chan<- error) {
	for {
		var f *inFrame
		select {
		case f = <-st.free:
		case <-st.ctx.Done():
			done <- nil
			return
		}
		if err := stream.RecvMsg(f); err != nil {
			if errors.Is(err, io.EOF) {
				// A normal end: the worker first takes the frames before it,
				// then fails only if it needs more.
				select {
				case st.in <- nil:
				case <-st.ctx.Done():
				}
			}
			done <- err
			return
		}
		if f.JobId != st.ring.JobID || f.Generation != st.ring.Generation || int(f.SenderRank) != st.prev || f.Seq == 0 {
			st.m.refused.Add(1)
			err := fmt.Errorf("%w: frame of job %q generation %d from rank %d seq %d on the stream of job %q generation %d",
				ErrFenced, f.JobId, f.Generation, f.SenderRank, f.Seq, st.ring.JobID, st.ring.Generation)
			st.m.log.Warn("refused ring frame", "job", st.ring.JobID, "generation", st.ring.Generation, "peer", st.ring.Addrs[st.prev], "err", err)
			done <- err
			return
		}
		select {
		case st.in <- f:
		case <-st.ctx.Done():
			done <- nil
			return
		}
	}
}
