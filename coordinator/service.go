package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// DefaultLease is how long a worker stays registered without a heartbeat.
const DefaultLease = 5 * time.Second

// ServiceConfig configures a Service.
type ServiceConfig struct {
	Node   *Node
	FSM    *FSM
	Lease  time.Duration // DefaultLease if 0
	Logger *slog.Logger
	// DialOptions for forwarding calls to the leader (credentials);
	// insecure if empty.
	DialOptions []grpc.DialOption
}

// Service is the Coordinator gRPC service. Any coordinator answers any
// call: reads come from the local replica; writes are proposed through raft
// on the leader and forwarded to the leader by a follower. Leases live only
// in the leader's memory (heartbeats are not replicated); the leader
// commits the removal of a worker whose lease expired.
type Service struct {
	pb.UnimplementedCoordinatorServer

	node   *Node
	fsm    *FSM
	lease  time.Duration
	log    *slog.Logger
	dial   []grpc.DialOption
	leases *leases

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // leader address -> connection, for forwarding

	stop chan struct{}
	done chan struct{}
}

// NewService makes the service and starts its lease keeper, which acts
// only while the node leads. Register it with pb.RegisterCoordinatorServer
// and Close it before the Node.
func NewService(cfg ServiceConfig) *Service {
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.DialOptions) == 0 {
		cfg.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	s := &Service{
		node: cfg.Node, fsm: cfg.FSM, lease: cfg.Lease,
		log:    cfg.Logger.With("component", "coordinator-service"),
		dial:   cfg.DialOptions,
		leases: newLeases(),
		conns:  map[string]*grpc.ClientConn{},
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go s.keepLeases()
	return s
}

// Close stops the lease keeper and closes forwarding connections.
func (s *Service) Close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	for addr, c := range s.conns {
		c.Close()
		delete(s.conns, addr)
	}
}

// propose validates and stamps cmd, then applies it through raft, here if
// this node leads. A follower returns ErrNotLeader; the callers forward.
func (s *Service) propose(ctx context.Context, cmd *pb.Command) (any, error) {
	cmd.Version = CommandVersion
	cmd.TimeUnixMs = time.Now().UnixMilli()
	if err := ValidateCommand(cmd); err != nil {
		return nil, err
	}
	b, err := EncodeCommand(cmd)
	if err != nil {
		return nil, err
	}
	v, err := s.node.Apply(ctx, b)
	if err != nil {
		return nil, err
	}
	r, ok := v.(ApplyResult)
	if !ok {
		return nil, fmt.Errorf("coordinator: apply returned %T", v)
	}
	return r.Value, r.Err
}

// leaderClient returns a client of the leader's Coordinator service, for a
// follower to forward a call.
func (s *Service) leaderClient() (pb.CoordinatorClient, error) {
	_, addr := s.node.Leader()
	if addr == "" {
		return nil, status.Error(codes.Unavailable, "no raft leader is known right now; retry")
	}
	if addr == s.node.Addr() {
		return nil, status.Error(codes.Unavailable, "leadership is changing; retry")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.conns[addr]
	if !ok {
		var err error
		c, err = grpc.NewClient(addr, s.dial...)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "dial leader %s: %v", addr, err)
		}
		s.conns[addr] = c
	}
	return pb.NewCoordinatorClient(c), nil
}

// forwarded marks calls a follower forwards, so the leader never forwards
// them again (no loops while leadership moves).
const forwardedKey = "gencluster-forwarded"

// write runs a write locally when this node leads, else forwards it to the
// leader with call.
func write[R any](ctx context.Context, s *Service, local func() (R, error), call func(pb.CoordinatorClient, context.Context) (R, error)) (R, error) {
	r, err := local()
	if err == nil || !errors.Is(err, ErrNotLeader) {
		return r, toStatus(err)
	}
	var zero R
	if isForwarded(ctx) {
		return zero, status.Error(codes.Unavailable, "this coordinator lost leadership; retry")
	}
	c, cerr := s.leaderClient()
	if cerr != nil {
		return zero, cerr
	}
	return call(c, markForwarded(ctx))
}

// toStatus maps domain errors to gRPC status codes, in one place.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, ErrAlreadyExists), errors.Is(err, ErrServerConflict):
		code = codes.AlreadyExists
	case errors.Is(err, ErrStaleGeneration), errors.Is(err, ErrNotRunning):
		code = codes.FailedPrecondition
	case errors.Is(err, ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, raft.ErrEnqueueTimeout):
		// Retryable at any coordinator. After ErrLeadershipLost the write
		// may or may not have committed; joins, leaves and failure reports
		// are idempotent.
		code = codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, ErrUnsupportedVersion):
		code = codes.FailedPrecondition
	}
	return status.Error(code, err.Error())
}

// coordinators lists the addresses of every coordinator in the group.
func (s *Service) coordinators(ctx context.Context) []string {
	servers, err := s.node.Servers(ctx)
	if err != nil {
		return []string{s.node.Addr()}
	}
	addrs := make([]string, 0, len(servers))
	for _, sv := range servers {
		addrs = append(addrs, sv.Addr)
	}
	return addrs
}

// assignment reads a worker's assignment from the local replica.
func (s *Service) assignment(id string) (*pb.Assignment, error) {
	var a *pb.Assignment
	var err error
	s.fsm.Read(func(st *State) { a, err = st.Assignment(id) })
	return a, err
}

// Join registers a worker and starts its lease.
func (s *Service) Join(ctx context.Context, req *pb.JoinRequest) (*pb.JoinResponse, error) {
	return write(ctx, s, func() (*pb.JoinResponse, error) {
		_, err := s.propose(ctx, &pb.Command{Body: &pb.Command_RegisterWorker{RegisterWorker: &pb.RegisterWorker{WorkerId: req.GetWorkerId(), Addr: req.GetAddr()}}})
		if err != nil {
			return nil, err
		}
		s.leases.renew(req.GetWorkerId(), time.Now().Add(s.lease))
		a, err := s.assignment(req.GetWorkerId())
		if err != nil {
			return nil, err
		}
		s.log.Info("worker joined", "worker", req.GetWorkerId(), "addr", req.GetAddr(), "generation", a.GetGeneration())
		return &pb.JoinResponse{Assignment: a, LeaseMs: s.lease.Milliseconds(), Coordinators: s.coordinators(ctx)}, nil
	}, func(c pb.CoordinatorClient, ctx context.Context) (*pb.JoinResponse, error) { return c.Join(ctx, req) })
}

// Heartbeat renews a worker's lease (on the leader) and returns its
// assignment, which holds only committed state.
func (s *Service) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	if err := validateID("worker_id", req.GetWorkerId()); err != nil {
		return nil, toStatus(err)
	}
	return write(ctx, s, func() (*pb.HeartbeatResponse, error) {
		if !s.node.IsLeader() {
			return nil, ErrNotLeader
		}
		a, err := s.assignment(req.GetWorkerId())
		if err != nil {
			return nil, err // not registered (lease expired): join again
		}
		if w := s.workerAddr(req.GetWorkerId()); req.GetAddr() != "" && w != req.GetAddr() {
			return nil, fmt.Errorf("worker id %q is held by the worker at %s, not %s: %w", req.GetWorkerId(), w, req.GetAddr(), ErrAlreadyExists)
		}
		s.leases.renew(req.GetWorkerId(), time.Now().Add(s.lease))
		return &pb.HeartbeatResponse{Assignment: a, LeaseMs: s.lease.Milliseconds(), Coordinators: s.coordinators(ctx)}, nil
	}, func(c pb.CoordinatorClient, ctx context.Context) (*pb.HeartbeatResponse, error) {
		return c.Heartbeat(ctx, req)
	})
}

func (s *Service) workerAddr(id string) string {
	var addr string
	s.fsm.Read(func(st *State) {
		if w, err := st.Worker(id); err == nil {
			addr = w.GetAddr()
		}
	})
	return addr
}

// Leave removes a worker at once.
func (s *Service) Leave(ctx context.Context, req *pb.LeaveRequest) (*pb.LeaveResponse, error) {
	return write(ctx, s, func() (*pb.LeaveResponse, error) {
		_, err := s.propose(ctx, &pb.Command{Body: &pb.Command_RemoveWorkers{RemoveWorkers: &pb.RemoveWorkers{WorkerIds: []string{req.GetWorkerId()}, Reason: "leave"}}})
		if err != nil {
			return nil, err
		}
		s.leases.drop(req.GetWorkerId())
		return &pb.LeaveResponse{}, nil
	}, func(c pb.CoordinatorClient, ctx context.Context) (*pb.LeaveResponse, error) { return c.Leave(ctx, req) })
}

// ReportFailure removes a failed ring peer at once, if the ring is still
// at the generation the failure was seen in.
func (s *Service) ReportFailure(ctx context.Context, req *pb.ReportFailureRequest) (*pb.ReportFailureResponse, error) {
	if err := validateID("reporter_id", req.GetReporterId()); err != nil {
		return nil, toStatus(err)
	}
	return write(ctx, s, func() (*pb.ReportFailureResponse, error) {
		v, err := s.propose(ctx, &pb.Command{Body: &pb.Command_RemoveWorkers{RemoveWorkers: &pb.RemoveWorkers{
			WorkerIds: []string{req.GetFailedId()}, Generation: req.GetGeneration(),
			Reason: "failure reported by " + req.GetReporterId(),
		}}})
		if err != nil {
			return nil, err
		}
		s.leases.drop(req.GetFailedId())
		gen, _ := v.(uint64)
		s.log.Warn("worker failure reported", "failed", req.GetFailedId(), "reporter", req.GetReporterId(), "reason", req.GetReason(), "generation", gen)
		return &pb.ReportFailureResponse{Generation: gen}, nil
	}, func(c pb.CoordinatorClient, ctx context.Context) (*pb.ReportFailureResponse, error) {
		return c.ReportFailure(ctx, req)
	})
}

// Submit queues a job and returns its id.
func (s *Service) Submit(ctx context.Context, req *pb.SubmitRequest) (*pb.SubmitResponse, error) {
	if err := ValidateJobSpec(req.GetJob()); err != nil {
		return nil, toStatus(err)
	}
	return write(ctx, s, func() (*pb.SubmitResponse, error) {
		v, err := s.propose(ctx, &pb.Command{Body: &pb.Command_SubmitJob{SubmitJob: &pb.SubmitJob{Spec: proto.CloneOf(req.GetJob()), RequestId: req.GetRequestId()}}})
		if err != nil {
			return nil, err
		}
		id, _ := v.(string)
		s.log.Info("job submitted", "job", id, "model", req.GetJob().GetModel(), "steps", req.GetJob().GetSteps())
		return &pb.SubmitResponse{JobId: id}, nil
	}, func(c pb.CoordinatorClient, ctx context.Context) (*pb.SubmitResponse, error) {
		return c.Submit(ctx, req)
	})
}

// Status reads the cluster from the local replica.
func (s *Service) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	resp := &pb.StatusResponse{}
	_, resp.Leader = s.node.Leader()
	servers, err := s.node.Servers(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	for _, sv := range servers {
		resp.Coordinators = append(resp.Coordinators, &pb.CoordinatorInfo{Id: sv.ID, Addr: sv.Addr, State: sv.State, Voter: sv.Voter})
	}
	s.fsm.Read(func(st *State) {
		resp.Workers = st.Workers()
		resp.Jobs = st.Jobs()
		resp.Generation = st.Generation()
		resp.Ring = st.Ring()
	})
	return resp, nil
}

// ReportProgress records a completed step of the running job.
func (s *Service) ReportProgress(ctx context.Context, req *pb.ReportProgressRequest) (*pb.ReportProgressResponse, error) {
	return write(ctx, s, func() (*pb.ReportProgressResponse, error) {
		_, err := s.propose(ctx, &pb.Command{Body: &pb.Command_ReportProgress{ReportProgress: &pb.ReportProgress{
			JobId: req.GetJobId(), Generation: req.GetGeneration(), Step: req.GetStep(),
			Loss: req.GetLoss(), ImagesPerSec: req.GetImagesPerSec(),
		}}})
		if err != nil {
			return nil, err
		}
		return &pb.ReportProgressResponse{}, nil
	}, func(c pb.CoordinatorClient, ctx context.Context) (*pb.ReportProgressResponse, error) {
		return c.ReportProgress(ctx, req)
	})
}

// FinishJob ends the running job; the next queued one starts.
func (s *Service) FinishJob(ctx context.Context, req *pb.FinishJobRequest) (*pb.FinishJobResponse, error) {
	state := pb.JobState_JOB_STATE_DONE
	if req.GetFailed() {
		state = pb.JobState_JOB_STATE_FAILED
	}
	return write(ctx, s, func() (*pb.FinishJobResponse, error) {
		v, err := s.propose(ctx, &pb.Command{Body: &pb.Command_FinishJob{FinishJob: &pb.FinishJob{
			JobId: req.GetJobId(), State: state, Message: req.GetMessage(),
		}}})
		if err != nil {
			return nil, err
		}
		next, _ := v.(string)
		s.log.Info("job finished", "job", req.GetJobId(), "state", state, "by", req.GetWorkerId(), "next", next)
		return &pb.FinishJobResponse{NextJobId: next}, nil
	}, func(c pb.CoordinatorClient, ctx context.Context) (*pb.FinishJobResponse, error) {
		return c.FinishJob(ctx, req)
	})
}

// AddCoordinator adds a voter to the raft group (on the leader).
func (s *Service) AddCoordinator(ctx context.Context, req *pb.AddCoordinatorRequest) (*pb.AddCoordinatorResponse, error) {
	if err := errors.Join(validateID("id", req.GetId()), validateAddr("addr", req.GetAddr())); err != nil {
		return nil, toStatus(err)
	}
	return write(ctx, s, func() (*pb.AddCoordinatorResponse, error) {
		if err := s.node.AddVoter(ctx, req.GetId(), req.GetAddr()); err != nil {
			return nil, err
		}
		return &pb.AddCoordinatorResponse{}, nil
	}, func(c pb.CoordinatorClient, ctx context.Context) (*pb.AddCoordinatorResponse, error) {
		return c.AddCoordinator(ctx, req)
	})
}

// RemoveCoordinator removes a server from the raft group (on the leader).
func (s *Service) RemoveCoordinator(ctx context.Context, req *pb.RemoveCoordinatorRequest) (*pb.RemoveCoordinatorResponse, error) {
	if err := validateID("id", req.GetId()); err != nil {
		return nil, toStatus(err)
	}
	return write(ctx, s, func() (*pb.RemoveCoordinatorResponse, error) {
		if err := s.node.RemoveServer(ctx, req.GetId()); err != nil {
			return nil, err
		}
		return &pb.RemoveCoordinatorResponse{}, nil
	}, func(c pb.CoordinatorClient, ctx context.Context) (*pb.RemoveCoordinatorResponse, error) {
		return c.RemoveCoordinator(ctx, req)
	})
}
