package coordinator

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/ckptstore"
)

// Client calls the coordinators and fails over by itself: it keeps every
// coordinator address it is given or learns (from Status, Join and
// Heartbeat answers) and, when one does not answer, tries the next. Any
// coordinator answers any call (followers forward writes to the leader),
// so the client never needs to find the leader itself.
type Client struct {
	dial []grpc.DialOption

	mu    sync.Mutex
	addrs []string
	cur   int
	conns map[string]*grpc.ClientConn
	// worker, secret: the worker this client calls for, sent with every
	// call once set (SetWorker).
	worker, secret string
}

// SetWorker makes every later call carry the worker's id and the secret
// the coordinators issued to it, which they check before acting for that
// id.
func (c *Client) SetWorker(id, secret string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.worker, c.secret = id, secret
}

// identify adds the worker's id and secret, if set, to an outgoing call.
func (c *Client) identify(ctx context.Context) context.Context {
	c.mu.Lock()
	id, secret := c.worker, c.secret
	c.mu.Unlock()
	return withWorker(ctx, id, secret)
}

// NewClient makes a client of the coordinators at addrs (at least one).
// dial options default to insecure transport.
func NewClient(addrs []string, dial ...grpc.DialOption) (*Client, error) {
	if len(addrs) == 0 {
		return nil, errors.New("coordinator client: no coordinator address given")
	}
	for _, a := range addrs {
		if err := validateAddr("coordinator", a); err != nil {
			return nil, err
		}
	}
	if len(dial) == 0 {
		dial = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return &Client{dial: dial, addrs: slices.Clone(addrs), conns: map[string]*grpc.ClientConn{}}, nil
}

// Addrs returns the coordinator addresses the client knows.
func (c *Client) Addrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.addrs)
}

// Close closes the client's connections.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for a, conn := range c.conns {
		errs = append(errs, conn.Close())
		delete(c.conns, a)
	}
	return errors.Join(errs...)
}

func (c *Client) learn(addrs []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range addrs {
		if a != "" && !slices.Contains(c.addrs, a) {
			c.addrs = append(c.addrs, a)
		}
	}
}

// pick returns the client of the current coordinator and its address.
func (c *Client) pick() (pb.CoordinatorClient, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	addr := c.addrs[c.cur%len(c.addrs)]
	conn, ok := c.conns[addr]
	if !ok {
		var err error
		if conn, err = grpc.NewClient(addr, c.dial...); err != nil {
			return nil, addr, fmt.Errorf("coordinator %s: %w", addr, err)
		}
		c.conns[addr] = conn
	}
	return pb.NewCoordinatorClient(conn), addr, nil
}

func (c *Client) next(failed string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.addrs[c.cur%len(c.addrs)] == failed {
		c.cur = (c.cur + 1) % len(c.addrs)
	}
}

// noAnswer is the error of a call no coordinator answered before ctx
// ended: each coordinator tried and why it failed, in address order.
func noAnswer(ctx context.Context, last map[string]error) error {
	addrs := slices.Sorted(maps.Keys(last))
	// ctx has ended: the look-ups share one second of their own.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	verbs := make([]string, 0, len(addrs))
	args := make([]any, 0, len(addrs)+1)
	for _, addr := range addrs {
		verbs = append(verbs, "%w")
		args = append(args, fmt.Errorf("coordinator %s: %w", addr, explainDial(lctx, addr, last[addr])))
	}
	return fmt.Errorf("no coordinator answered ("+strings.Join(verbs, "; ")+"): %w", append(args, ctx.Err())...)
}

// explainDial returns err, or says that the host of addr does not
// resolve if so: gRPC says only that its resolver produced zero
// addresses. The look-up is bounded by ctx, which callers keep short.
func explainDial(ctx context.Context, addr string, err error) error {
	host, _, serr := net.SplitHostPort(addr)
	if serr != nil || net.ParseIP(host) != nil {
		return err
	}
	if _, lerr := net.DefaultResolver.LookupHost(ctx, host); lerr != nil && ctx.Err() == nil {
		return fmt.Errorf("host %q does not resolve: %w", host, lerr)
	}
	return err // it resolves, or the look-up ran out of time: say nothing of it
}

// retryable reports errors after which another coordinator, or the same
// one a moment later, may answer.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		return true
	}
	return false
}

// perTry bounds one attempt so that a coordinator that hangs is left.
const perTry = 3 * time.Second

// call runs fn against the coordinators until one answers with anything
// but a retryable error, or ctx ends.
func call[R any](ctx context.Context, c *Client, fn func(context.Context, pb.CoordinatorClient) (R, error)) (R, error) {
	return callWithin(ctx, c, perTry, fn)
}

// transferTry bounds one attempt of a checkpoint transfer.
const transferTry = 5 * time.Minute

// callWithin is call with each attempt bounded by try.
func callWithin[R any](ctx context.Context, c *Client, try time.Duration, fn func(context.Context, pb.CoordinatorClient) (R, error)) (R, error) {
	var zero R
	last := map[string]error{} // each coordinator's last failure
	backoff := 20 * time.Millisecond
	for {
		cl, addr, err := c.pick()
		if err == nil {
			tctx, cancel := context.WithTimeout(c.identify(ctx), try)
			var r R
			r, err = fn(tctx, cl)
			cancel()
			if err == nil || !retryable(err) {
				return r, err
			}
		}
		last[addr] = err
		c.next(addr)
		select {
		case <-ctx.Done():
			return zero, noAnswer(ctx, last)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// Status reads the cluster's status. An answer that says it may be stale
// (a coordinator cut off from the leader) is returned only if no other
// coordinator answers without saying so.
func (c *Client) Status(ctx context.Context) (*pb.StatusResponse, error) {
	r, err := call(ctx, c, func(ctx context.Context, cl pb.CoordinatorClient) (*pb.StatusResponse, error) {
		return cl.Status(ctx, &pb.StatusRequest{})
	})
	for range len(c.Addrs()) - 1 {
		if err != nil || r.GetStaleReason() == "" || ctx.Err() != nil {
			break
		}
		_, addr, perr := c.pick()
		if perr != nil {
			break
		}
		c.next(addr) // it answered, but stale: ask the next one
		cl, _, perr := c.pick()
		if perr != nil {
			break
		}
		tctx, cancel := context.WithTimeout(ctx, perTry)
		r2, err2 := cl.Status(tctx, &pb.StatusRequest{})
		cancel()
		if err2 == nil && r2.GetStaleReason() == "" {
			r = r2
		}
	}
	if err == nil {
		var addrs []string
		for _, co := range r.GetCoordinators() {
			addrs = append(addrs, co.GetAddr())
		}
		c.learn(addrs)
	}
	return r, err
}

// Submit queues a job and returns its id. Its retries carry one random
// request id, so a retry after a lost answer never queues the job twice.
func (c *Client) Submit(ctx context.Context, spec *pb.JobSpec) (string, error) {
	req := &pb.SubmitRequest{Job: spec, RequestId: rand.Text()}
	r, err := call(ctx, c, func(ctx context.Context, cl pb.CoordinatorClient) (*pb.SubmitResponse, error) {
		return cl.Submit(ctx, req)
	})
	return r.GetJobId(), err
}

// SubmitEpochs queues a job of epochs passes over its data set (with
// spec.steps 0; the coordinator counts the steps) or, with epochs 0, of
// spec.steps; it returns the job's id and steps.
func (c *Client) SubmitEpochs(ctx context.Context, spec *pb.JobSpec, epochs float64) (string, int64, error) {
	req := &pb.SubmitRequest{Job: spec, RequestId: rand.Text(), Epochs: epochs}
	r, err := call(ctx, c, func(ctx context.Context, cl pb.CoordinatorClient) (*pb.SubmitResponse, error) {
		return cl.Submit(ctx, req)
	})
	return r.GetJobId(), r.GetSteps(), err
}

// Join registers a worker.
func (c *Client) Join(ctx context.Context, req *pb.JoinRequest) (*pb.JoinResponse, error) {
	r, err := call(ctx, c, func(ctx context.Context, cl pb.CoordinatorClient) (*pb.JoinResponse, error) {
		return cl.Join(ctx, req)
	})
	if err == nil {
		c.learn(r.GetCoordinators())
	}
	return r, err
}

// Heartbeat renews a worker's lease and returns its assignment.
func (c *Client) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	r, err := call(ctx, c, func(ctx context.Context, cl pb.CoordinatorClient) (*pb.HeartbeatResponse, error) {
		return cl.Heartbeat(ctx, req)
	})
	if err == nil {
		c.learn(r.GetCoordinators())
	}
	return r, err
}

// AddCoordinator adds a coordinator to the raft group.
func (c *Client) AddCoordinator(ctx context.Context, id, addr string) error {
	_, err := call(ctx, c, func(ctx context.Context, cl pb.CoordinatorClient) (*pb.AddCoordinatorResponse, error) {
		return cl.AddCoordinator(ctx, &pb.AddCoordinatorRequest{Id: id, Addr: addr})
	})
	return err
}

// RemoveCoordinator removes a coordinator from the raft group.
func (c *Client) RemoveCoordinator(ctx context.Context, id string) error {
	_, err := call(ctx, c, func(ctx context.Context, cl pb.CoordinatorClient) (*pb.RemoveCoordinatorResponse, error) {
		return cl.RemoveCoordinator(ctx, &pb.RemoveCoordinatorRequest{Id: id})
	})
	return err
}

// Leave removes a worker from the cluster at once.
func (c *Client) Leave(ctx context.Context, workerID string) error {
	_, err := call(ctx, c, func(ctx context.Context, cl pb.CoordinatorClient) (*pb.LeaveResponse, error) {
		return cl.Leave(ctx, &pb.LeaveRequest{WorkerId: workerID})
	})
	return err
}

// ReportFailure tells the coordinators that a ring generation failed and
// which peer the reporter saw fail (if any); the answer says whether that
// peer was removed and the generation the cluster is in afterwards.
func (c *Client) ReportFailure(ctx context.Context, req *pb.ReportFailureRequest) (*pb.ReportFailureResponse, error) {
	return call(ctx, c, func(ctx context.Context, cl pb.CoordinatorClient) (*pb.ReportFailureResponse, error) {
		return cl.ReportFailure(ctx, req)
	})
}

// ReportUnfit takes a worker out of a job's ring: it cannot build the
// job's replica.
func (c *Client) ReportUnfit(ctx context.Context, req *pb.ReportUnfitRequest) error {
	_, err := call(ctx, c, func(ctx context.Context, cl pb.CoordinatorClient) (*pb.ReportUnfitResponse, error) {
		return cl.ReportUnfit(ctx, req)
	})
	return err
}

// Cancel ends a queued or running job; it returns the id of the job that
// started instead, if any.
func (c *Client) Cancel(ctx context.Context, jobID, reason string) (string, error) {
	r, err := call(ctx, c, func(ctx context.Context, cl pb.CoordinatorClient) (*pb.CancelResponse, error) {
		return cl.Cancel(ctx, &pb.CancelRequest{JobId: jobID, Reason: reason})
	})
	return r.GetNextJobId(), err
}

// ReportProgress records the running job's progress after a completed step.
func (c *Client) ReportProgress(ctx context.Context, req *pb.ReportProgressRequest) error {
	_, err := call(ctx, c, func(ctx context.Context, cl pb.CoordinatorClient) (*pb.ReportProgressResponse, error) {
		return cl.ReportProgress(ctx, req)
	})
	return err
}

// PutSample sends the running job's latest sample grid.
func (c *Client) PutSample(ctx context.Context, req *pb.PutSampleRequest) error {
	_, err := call(ctx, c, func(ctx context.Context, cl pb.CoordinatorClient) (*pb.PutSampleResponse, error) {
		return cl.PutSample(ctx, req)
	})
	return err
}

// FinishJob ends the running job and returns the id of the next one, if
// any.
func (c *Client) FinishJob(ctx context.Context, req *pb.FinishJobRequest) (string, error) {
	r, err := call(ctx, c, func(ctx context.Context, cl pb.CoordinatorClient) (*pb.FinishJobResponse, error) {
		return cl.FinishJob(ctx, req)
	})
	return r.GetNextJobId(), err
}

// PutCheckpoint sends the checkpoint file at path (described by hdr) to
// the coordinators and returns its manifest once a majority of them hold
// it and the manifest is committed. A coordinator that cannot take it is
// left for the next.
func (c *Client) PutCheckpoint(ctx context.Context, path string, hdr *pb.CheckpointHeader) (*pb.CheckpointManifest, error) {
	r, err := callWithin(ctx, c, transferTry, func(ctx context.Context, cl pb.CoordinatorClient) (*pb.PutCheckpointResponse, error) {
		st, err := cl.PutCheckpoint(ctx)
		if err != nil {
			return nil, err
		}
		if err := ckptstore.Send(ctx, path, proto.CloneOf(hdr), st.Send); err != nil && !errors.Is(err, io.EOF) {
			st.CloseSend()
			return nil, err
		}
		// io.EOF from Send: the server ended the stream; its status says why.
		return st.CloseAndRecv()
	})
	return r.GetManifest(), err
}

// GetCheckpoint fetches a checkpoint (req.step 0: the job's latest good
// one) into the file dest names once it has seen the header, atomically
// and verified (package ckptstore). It returns the header received.
func (c *Client) GetCheckpoint(ctx context.Context, req *pb.GetCheckpointRequest, dest func(*pb.CheckpointHeader) (string, error)) (*pb.CheckpointHeader, error) {
	return callWithin(ctx, c, transferTry, func(ctx context.Context, cl pb.CoordinatorClient) (*pb.CheckpointHeader, error) {
		st, err := cl.GetCheckpoint(ctx, req)
		if err != nil {
			return nil, err
		}
		return ckptstore.ReceiveTo(ctx, st.Recv, dest)
	})
}

// ListCheckpoints lists the committed checkpoints of a job (every job if
// jobID is empty).
func (c *Client) ListCheckpoints(ctx context.Context, jobID string) ([]*pb.CheckpointManifest, error) {
	r, err := call(ctx, c, func(ctx context.Context, cl pb.CoordinatorClient) (*pb.ListCheckpointsResponse, error) {
		return cl.ListCheckpoints(ctx, &pb.ListCheckpointsRequest{JobId: jobID})
	})
	return r.GetCheckpoints(), err
}
