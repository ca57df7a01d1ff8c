package coordinator

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"image/png"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/ckptstore"
	"github.com/gencluster/gencluster/dataset"
	"github.com/gencluster/gencluster/sharding"
)

// DefaultLease is how long a worker stays registered without a heartbeat.
const DefaultLease = 5 * time.Second

// DefaultRejoinWait is how long a new leader waits for the registered
// workers it has not heard from (after a whole-cluster restart: the
// workers of the interrupted ring) before the ring goes on without them.
const DefaultRejoinWait = 30 * time.Second

// DefaultProbeTimeout bounds the leader's probe of a worker reported
// failed: one that does not answer within it is dead.
const DefaultProbeTimeout = time.Second

// accusationLimit is how many failed generations in a row a live worker
// may be blamed for by its ring peers before it is removed anyway (it is
// alive for the coordinator but its peers cannot work with it: a partial
// partition).
const accusationLimit = 3

// ServiceConfig configures a Service.
type ServiceConfig struct {
	Node  *Node
	FSM   *FSM
	Lease time.Duration // DefaultLease if 0
	// RejoinWait is how long a new leader holds a ring whose members it has
	// not heard from yet (DefaultRejoinWait if 0; at least Lease).
	RejoinWait time.Duration
	// ProbeTimeout bounds the probe of a worker reported failed
	// (DefaultProbeTimeout if 0).
	ProbeTimeout time.Duration
	// CheckJoinAddr makes the leader dial a worker that joins from an
	// address it has not registered (a new worker, or one restarted
	// elsewhere) before admitting it: one whose --advertise address does
	// not resolve or answer (0.0.0.0, a container-internal name) is
	// refused with FailedPrecondition naming the address, instead of
	// breaking every ring it enters. Workers must serve the gRPC health
	// service (real ones do; tests' stand-ins may not).
	CheckJoinAddr bool
	// RequireWorkerSecret refuses a call made for a worker id (heartbeat,
	// reports, finishing a job, checkpoint uploads) that does not carry
	// that worker's id and secret (see withWorker). Calls that carry them
	// are checked either way. Tests' stand-in workers may not carry them.
	RequireWorkerSecret bool
	// StragglerFactor flags a ring member whose compute time per step is
	// more than this many times the median of the other ring members' (DefaultStragglerFactor
	// if 0) in status and metrics; it is not evicted.
	StragglerFactor float64
	// QueueLimit bounds the queued jobs (MaxQueuedJobs if 0) and
	// WorkerLimit the registered workers (MaxWorkers if 0): a submit or a
	// new worker's join beyond them is refused with ResourceExhausted.
	QueueLimit, WorkerLimit int
	// DatasetStreams bounds the data-set streams served at once
	// (DefaultDatasetStreams if 0) and DatasetRate each one's bytes/s
	// (DefaultDatasetRate if 0).
	DatasetStreams int
	DatasetRate    int64
	Logger         *slog.Logger
	// DialOptions for forwarding calls to the leader and copying
	// checkpoints to peers (credentials); insecure if empty.
	DialOptions []grpc.DialOption
	// ProbeDialOptions for dialling workers (the probe of a worker
	// reported failed, the check of a joining worker's address); insecure
	// if empty.
	ProbeDialOptions []grpc.DialOption
	// Checkpoints is this coordinator's checkpoint store (DATA_DIR/
	// checkpoints); nil: it keeps none (the checkpoint calls answer
	// Unavailable, and a majority must be found among the others).
	Checkpoints *ckptstore.Store
	// Version is this binary's version, reported in Status.
	Version string
}

// Service is the Coordinator gRPC service. Any coordinator answers any
// call: reads come from the local replica; writes are proposed through raft
// on the leader and forwarded to the leader by a follower. Leases live only
// in the leader's memory (heartbeats are not replicated); the leader
// commits the removal of a worker whose lease expired.
type Service struct {
	pb.UnimplementedCoordinatorServer

	node       *Node
	fsm        *FSM
	lease      time.Duration
	rejoinWait time.Duration
	probeWait  time.Duration
	// checkJoinAddr: see ServiceConfig.CheckJoinAddr.
	checkJoinAddr bool
	requireSecret bool          // see ServiceConfig.RequireWorkerSecret
	queueLimit    int           // see ServiceConfig.QueueLimit
	straggler     float64       // see ServiceConfig.StragglerFactor
	datasetSlots  chan struct{} // a token per data-set stream running
	datasetRate   int64
	workerLimit   int
	log           *slog.Logger
	dial          []grpc.DialOption
	probeDial     []grpc.DialOption // for dialling workers
	leases        *leases
	ckpt          *keeper // nil if this coordinator keeps no checkpoints
	version       string
	counts        counts

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // peer address -> connection, for forwarding and checkpoint copies

	stop chan struct{}
	done chan struct{}
}

// Counters are events this coordinator's service counted since it
// started (for its metrics).
type Counters struct {
	// FailureReports decided by this coordinator as leader: the blamed
	// worker removed, or kept (it answered the leader's probe).
	FailuresRemoved, FailuresKept uint64
	// LeaseExpiries: workers this coordinator removed, as leader, because
	// their lease expired.
	LeaseExpiries uint64
	// Checkpoints (and their bytes) workers uploaded to this coordinator
	// that it stored and saw committed, and copies it stored for others.
	CheckpointsCommitted, CheckpointBytes, CopiesStored uint64
}

type counts struct {
	failuresRemoved, failuresKept, leaseExpiries, ckptCommitted, ckptBytes, copies atomic.Uint64
}

// Counters reads the service's counters.
func (s *Service) Counters() Counters {
	c := &s.counts
	return Counters{FailuresRemoved: c.failuresRemoved.Load(), FailuresKept: c.failuresKept.Load(), LeaseExpiries: c.leaseExpiries.Load(),
		CheckpointsCommitted: c.ckptCommitted.Load(), CheckpointBytes: c.ckptBytes.Load(), CopiesStored: c.copies.Load()}
}

// NewService makes the service and starts its lease keeper, which acts
// only while the node leads. Register it with pb.RegisterCoordinatorServer
// and Close it before the Node.
func NewService(cfg ServiceConfig) *Service {
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.RejoinWait <= 0 {
		cfg.RejoinWait = DefaultRejoinWait
	}
	cfg.RejoinWait = max(cfg.RejoinWait, cfg.Lease)
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.DialOptions) == 0 {
		cfg.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	if cfg.DatasetStreams <= 0 {
		cfg.DatasetStreams = DefaultDatasetStreams
	}
	if cfg.DatasetRate <= 0 {
		cfg.DatasetRate = DefaultDatasetRate
	}
	if cfg.QueueLimit <= 0 {
		cfg.QueueLimit = MaxQueuedJobs
	}
	if cfg.StragglerFactor <= 0 {
		cfg.StragglerFactor = DefaultStragglerFactor
	}
	if cfg.WorkerLimit <= 0 {
		cfg.WorkerLimit = MaxWorkers
	}
	if len(cfg.ProbeDialOptions) == 0 {
		cfg.ProbeDialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	s := &Service{
		node: cfg.Node, fsm: cfg.FSM, lease: cfg.Lease, rejoinWait: cfg.RejoinWait, probeWait: cfg.ProbeTimeout,
		checkJoinAddr: cfg.CheckJoinAddr,
		requireSecret: cfg.RequireWorkerSecret,
		queueLimit:    cfg.QueueLimit,
		straggler:     cfg.StragglerFactor,
		datasetSlots:  make(chan struct{}, cfg.DatasetStreams),
		datasetRate:   cfg.DatasetRate,
		workerLimit:   cfg.WorkerLimit,
		log:           cfg.Logger.With("component", "coordinator-service"),
		dial:          cfg.DialOptions,
		probeDial:     cfg.ProbeDialOptions,
		leases:        newLeases(),
		version:       cfg.Version,
		conns:         map[string]*grpc.ClientConn{},
		stop:          make(chan struct{}),
		done:          make(chan struct{}),
	}
	// Leases follow leadership as raft signals it (at once if this node
	// leads already; false at the latest when the node closes).
	// A new leader first applies everything committed before its term
	// (a barrier), so that no assignment it hands out is older than one a
	// worker already has; until then it answers Unavailable.
	var term atomic.Uint64
	cfg.Node.OnLeadershipChange(func(leading bool) {
		t := term.Add(1)
		if !leading {
			s.leases.deposed()
			return
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), s.rejoinWait)
			defer cancel()
			go func() {
				select {
				case <-s.stop:
					cancel()
				case <-ctx.Done():
				}
			}()
			if err := s.node.Barrier(ctx); err != nil {
				s.log.Warn("leader barrier", "err", err)
				return
			}
			if term.Load() != t {
				return // deposed meanwhile
			}
			s.leases.elected(time.Now(), s.rejoinWait)
			s.log.Info("leading: waiting for every registered worker to check in", "rejoin_wait", s.rejoinWait)
		}()
	})
	go s.keepLeases()
	if cfg.Checkpoints != nil {
		s.ckpt = newKeeper(s, cfg.Checkpoints)
		s.ckpt.wg.Add(1)
		go s.ckpt.run()
	}
	return s
}

// Ready says whether this coordinator can serve (nil) or why not: it
// knows a raft leader, has applied every entry it knows to be committed
// and, if it leads, has finished the barrier it runs before answering
// workers.
func (s *Service) Ready() error {
	id, addr := s.node.Leader()
	if addr == "" {
		if why := s.node.Unreachable(context.Background()); why != "" {
			return fmt.Errorf("no raft leader known; cannot reach %s", why)
		}
		return errors.New("no raft leader known")
	}
	if applied, committed := s.node.Lag(); applied < committed {
		return fmt.Errorf("applied %d of %d committed log entries", applied, committed)
	}
	if id == s.node.ID() && !s.leases.isLeading() {
		return errors.New("leading, applying the log before answering workers")
	}
	return nil
}

// Close stops the lease keeper and closes forwarding connections.
func (s *Service) Close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	if s.ckpt != nil {
		s.ckpt.close()
	}
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
	return s.peer(addr)
}

// peer returns a client of the Coordinator service at addr (another
// coordinator), on a connection kept for the service's life.
func (s *Service) peer(addr string) (pb.CoordinatorClient, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.conns[addr]
	if !ok {
		var err error
		c, err = grpc.NewClient(addr, s.dial...)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "dial coordinator %s: %v", addr, err)
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
	return call(c, markForwarded(forwardWorker(ctx, ctx)))
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
	case errors.Is(err, ErrNotOwner), errors.Is(err, ErrNotInRing):
		code = codes.PermissionDenied
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

// assignment reads a worker's assignment from the local replica and, on
// the leader, adds the hold: the ring members not heard from since this
// node was elected, which the generation waits for.
func (s *Service) assignment(id string) (*pb.Assignment, error) {
	var a *pb.Assignment
	var err error
	s.fsm.Read(func(st *State) { a, err = st.Assignment(id) })
	if err != nil || a.GetJobId() == "" {
		return a, err
	}
	if wait, why := s.hold(a.GetJobId(), a.GetRing()); len(wait) > 0 {
		a.WaitingFor, a.WaitReason = wait, why
	}
	return a, nil
}

// hold returns the members of job's ring that a generation waits for on
// this leader, and why: those it has not heard from since its election
// (after a whole-cluster restart, the interrupted ring's members coming
// back), else those that have not built the job's replica yet (at a job's
// start), each wait bounded by the rejoin wait. Empty when none.
func (s *Service) hold(job string, ring []*pb.RingMember) ([]string, string) {
	ids := make([]string, len(ring))
	for i, m := range ring {
		ids[i] = m.GetWorkerId()
	}
	now := time.Now()
	if wait := s.leases.unconfirmed(ids, now); len(wait) > 0 {
		return wait, fmt.Sprintf("waiting up to %v after a leader change for ring members to come back: %v", s.rejoinWait, wait)
	}
	if wait := s.leases.unready(ids, job, now, s.rejoinWait); len(wait) > 0 {
		return wait, fmt.Sprintf("waiting up to %v for ring members to build the job's replica: %v", s.rejoinWait, wait)
	}
	return nil, ""
}

// Join registers a worker and starts its lease. A worker's first join is
// issued a secret (only its SHA-256 enters the log); with it, the worker
// restarted on a new address takes over its registration at once.
func (s *Service) Join(ctx context.Context, req *pb.JoinRequest) (*pb.JoinResponse, error) {
	if err := validateText("secret", req.GetSecret(), false); err != nil {
		return nil, toStatus(err)
	}
	return write(ctx, s, func() (*pb.JoinResponse, error) {
		if s.node.IsLeader() && !s.leases.isLeading() {
			return nil, status.Error(codes.Unavailable, "new leader catching up with the log; retry")
		}
		reg := &pb.RegisterWorker{WorkerId: req.GetWorkerId(), Addr: req.GetAddr()}
		secret := req.GetSecret()
		issued := ""
		if secret == "" {
			issued = rand.Text()
			secret, reg.Issued = issued, true
		}
		h := sha256.Sum256([]byte(secret))
		reg.SecretSha256 = h[:]
		before := s.workerAddr(req.GetWorkerId())
		if before == "" {
			var n int
			s.fsm.Read(func(st *State) { n = len(st.Workers()) })
			if n >= s.workerLimit {
				return nil, status.Errorf(codes.ResourceExhausted, "%d workers are registered, the most a cluster holds", n)
			}
		}
		if s.checkJoinAddr && before != req.GetAddr() {
			if err := s.probe(ctx, req.GetAddr()); err != nil {
				return nil, status.Errorf(codes.FailedPrecondition,
					"worker %s advertises %s, which coordinator %s cannot reach: %v (give the worker an --advertise host:port that the other hosts can dial)",
					req.GetWorkerId(), req.GetAddr(), s.node.ID(), explainDial(ctx, req.GetAddr(), err))
			}
		}
		_, err := s.propose(ctx, &pb.Command{Body: &pb.Command_RegisterWorker{RegisterWorker: reg}})
		if err != nil {
			return nil, err
		}
		s.leases.renew(req.GetWorkerId(), time.Now().Add(s.lease), req.GetReadyJob(), 0)
		a, err := s.assignment(req.GetWorkerId())
		if err != nil {
			return nil, err
		}
		if before != "" && before != req.GetAddr() {
			s.log.Info("worker came back at a new address", "worker", req.GetWorkerId(), "addr", req.GetAddr(), "was", before, "generation", a.GetGeneration())
		} else {
			s.log.Info("worker joined", "worker", req.GetWorkerId(), "addr", req.GetAddr(), "generation", a.GetGeneration())
		}
		return &pb.JoinResponse{Assignment: a, LeaseMs: s.lease.Milliseconds(), Coordinators: s.coordinators(ctx), Secret: issued}, nil
	}, func(c pb.CoordinatorClient, ctx context.Context) (*pb.JoinResponse, error) { return c.Join(ctx, req) })
}

// Heartbeat renews a worker's lease (on the leader) and returns its
// assignment, which holds only committed state.
func (s *Service) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	if err := s.actingFor(ctx, req.GetWorkerId()); err != nil {
		return nil, err
	}
	if err := validateID("worker_id", req.GetWorkerId()); err != nil {
		return nil, toStatus(err)
	}
	return write(ctx, s, func() (*pb.HeartbeatResponse, error) {
		if !s.node.IsLeader() {
			return nil, ErrNotLeader
		}
		if !s.leases.isLeading() {
			return nil, status.Error(codes.Unavailable, "new leader catching up with the log; retry")
		}
		w := s.workerAddr(req.GetWorkerId())
		if w == "" {
			return nil, fmt.Errorf("worker %q: %w", req.GetWorkerId(), ErrNotFound) // lease expired: join again
		}
		if req.GetAddr() != "" && w != req.GetAddr() {
			return nil, fmt.Errorf("worker id %q is held by the worker at %s, not %s: %w", req.GetWorkerId(), w, req.GetAddr(), ErrAlreadyExists)
		}
		s.leases.renew(req.GetWorkerId(), time.Now().Add(s.lease), req.GetReadyJob(), req.GetComputeSeconds())
		a, err := s.assignment(req.GetWorkerId())
		if err != nil {
			return nil, err
		}
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
	if err := s.actingFor(ctx, req.GetWorkerId()); err != nil {
		return nil, err
	}
	return write(ctx, s, func() (*pb.LeaveResponse, error) {
		_, err := s.propose(ctx, &pb.Command{Body: &pb.Command_RemoveWorkers{RemoveWorkers: &pb.RemoveWorkers{WorkerIds: []string{req.GetWorkerId()}, Reason: "leave"}}})
		if err != nil {
			return nil, err
		}
		s.leases.drop(req.GetWorkerId())
		return &pb.LeaveResponse{}, nil
	}, func(c pb.CoordinatorClient, ctx context.Context) (*pb.LeaveResponse, error) { return c.Leave(ctx, req) })
}

// ReportFailure ends a failed ring generation. The peer the reporter blames
// is removed only on direct evidence: the leader probes it and it does not
// answer (dead, or paused), or its peers have blamed it for accusationLimit
// failed generations in a row. A live peer, or no one blamed, gets a new
// generation with the same members instead. Either way the report is
// conditional on the generation it was made in: the first one wins.
func (s *Service) ReportFailure(ctx context.Context, req *pb.ReportFailureRequest) (*pb.ReportFailureResponse, error) {
	if err := s.actingFor(ctx, req.GetReporterId()); err != nil {
		return nil, err
	}
	if err := errors.Join(validateID("reporter_id", req.GetReporterId()), validateText("reason", req.GetReason(), false)); err != nil {
		return nil, toStatus(err)
	}
	if f := req.GetFailedId(); f != "" {
		if err := validateID("failed_id", f); err != nil {
			return nil, toStatus(err)
		}
	}
	return write(ctx, s, func() (*pb.ReportFailureResponse, error) {
		if !s.node.IsLeader() {
			return nil, ErrNotLeader
		}
		var cur uint64
		var blame error
		s.fsm.Read(func(st *State) {
			cur = st.Generation()
			blame = checkBlame(st, req.GetReporterId(), req.GetFailedId())
		})
		if g := req.GetGeneration(); g != cur {
			return nil, fmt.Errorf("failure seen in generation %d, ring is at %d: %w", g, cur, ErrStaleGeneration)
		}
		if blame != nil {
			s.log.Warn("failure report refused", "reporter", req.GetReporterId(), "failed", req.GetFailedId(), "err", blame)
			return nil, blame
		}
		failed := req.GetFailedId()
		verdict := "no peer blamed"
		remove := false
		addr := s.workerAddr(failed)
		if addr != "" {
			if perr := s.probe(ctx, addr); perr != nil {
				remove, verdict = true, fmt.Sprintf("does not answer the leader's probe: %v", perr)
			} else if n := s.leases.accuse(failed, req.GetGeneration()); n >= accusationLimit {
				remove, verdict = true, fmt.Sprintf("answers the leader but its ring peers failed with it in %d generations in a row", n)
			} else {
				verdict = "answers the leader's probe: alive, not removed"
			}
		} else if failed != "" {
			verdict = "not registered"
		}
		var cmd *pb.Command
		if remove {
			cmd = &pb.Command{Body: &pb.Command_RemoveWorkers{RemoveWorkers: &pb.RemoveWorkers{
				WorkerIds: []string{failed}, Generation: req.GetGeneration(),
				Reason: truncate("failure reported by "+req.GetReporterId()+": "+verdict, MaxTextLen),
			}}}
		} else {
			cmd = &pb.Command{Body: &pb.Command_RenewRing{RenewRing: &pb.RenewRing{
				Generation: req.GetGeneration(), Reason: "generation failed, reported by " + req.GetReporterId(),
			}}}
		}
		v, err := s.propose(ctx, cmd)
		if err != nil {
			return nil, err
		}
		gen, _ := v.(uint64)
		if remove {
			s.counts.failuresRemoved.Add(1)
			s.leases.drop(failed)
			s.log.Warn("worker removed", "worker", failed, "addr", addr, "why", "failure report", "reporter", req.GetReporterId(), "verdict", verdict, "reason", req.GetReason(), "generation", gen)
		} else {
			s.counts.failuresKept.Add(1)
			s.log.Info("ring generation failed; forming it again", "blamed", failed, "verdict", verdict, "reporter", req.GetReporterId(), "reason", req.GetReason(), "generation", gen)
		}
		return &pb.ReportFailureResponse{Generation: gen, Removed: remove, Verdict: verdict}, nil
	}, func(c pb.CoordinatorClient, ctx context.Context) (*pb.ReportFailureResponse, error) {
		return c.ReportFailure(ctx, req)
	})
}

// probe asks the worker's gRPC server whether it serves (the standard
// health service), within the probe timeout: nil if it answers.
func (s *Service) probe(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, s.probeWait)
	defer cancel()
	conn, err := grpc.NewClient(addr, s.probeDial...)
	if err != nil {
		return err
	}
	defer conn.Close()
	// Not WaitForReady: a refused connection fails at once (a dead
	// process); a paused one completes the TCP handshake but never speaks
	// HTTP/2, and the probe times out.
	r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health %v", r.GetStatus())
	}
	return nil
}

// ReportUnfit takes a worker out of a job's ring: it cannot build the
// job's replica.
func (s *Service) ReportUnfit(ctx context.Context, req *pb.ReportUnfitRequest) (*pb.ReportUnfitResponse, error) {
	if err := s.actingFor(ctx, req.GetWorkerId()); err != nil {
		return nil, err
	}
	return write(ctx, s, func() (*pb.ReportUnfitResponse, error) {
		v, err := s.propose(ctx, &pb.Command{Body: &pb.Command_SetWorkerUnfit{SetWorkerUnfit: &pb.SetWorkerUnfit{
			WorkerId: req.GetWorkerId(), JobId: req.GetJobId(), Reason: truncate(req.GetReason(), MaxTextLen),
		}}})
		if err != nil {
			return nil, err
		}
		gen, _ := v.(uint64)
		s.log.Warn("worker cannot run the job; out of its ring", "worker", req.GetWorkerId(), "job", req.GetJobId(), "reason", req.GetReason(), "generation", gen)
		return &pb.ReportUnfitResponse{Generation: gen}, nil
	}, func(c pb.CoordinatorClient, ctx context.Context) (*pb.ReportUnfitResponse, error) {
		return c.ReportUnfit(ctx, req)
	})
}

// Cancel ends a queued or running job.
func (s *Service) Cancel(ctx context.Context, req *pb.CancelRequest) (*pb.CancelResponse, error) {
	return write(ctx, s, func() (*pb.CancelResponse, error) {
		v, err := s.propose(ctx, &pb.Command{Body: &pb.Command_CancelJob{CancelJob: &pb.CancelJob{JobId: req.GetJobId(), Reason: req.GetReason()}}})
		if err != nil {
			return nil, err
		}
		next, _ := v.(string)
		s.log.Info("job cancelled", "job", req.GetJobId(), "reason", req.GetReason(), "next", next)
		return &pb.CancelResponse{NextJobId: next}, nil
	}, func(c pb.CoordinatorClient, ctx context.Context) (*pb.CancelResponse, error) {
		return c.Cancel(ctx, req)
	})
}

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Submit queues a job and returns its id.
func (s *Service) Submit(ctx context.Context, req *pb.SubmitRequest) (*pb.SubmitResponse, error) {
	if e := req.GetEpochs(); e != 0 {
		spec, err := s.epochSteps(req.GetJob(), e)
		if err != nil {
			return nil, err
		}
		req = &pb.SubmitRequest{Job: spec, RequestId: req.GetRequestId()}
	}
	if err := ValidateJobSpec(req.GetJob()); err != nil {
		return nil, toStatus(err)
	}
	return write(ctx, s, func() (*pb.SubmitResponse, error) {
		var queued int
		s.fsm.Read(func(st *State) {
			for _, j := range st.Jobs() {
				if j.GetState() == JobQueued {
					queued++
				}
			}
		})
		if queued >= s.queueLimit {
			return nil, status.Errorf(codes.ResourceExhausted, "%d jobs are queued, the most the coordinators hold: cancel some or wait", queued)
		}
		v, err := s.propose(ctx, &pb.Command{Body: &pb.Command_SubmitJob{SubmitJob: &pb.SubmitJob{
			Spec: proto.CloneOf(req.GetJob()), RequestId: req.GetRequestId(), Nonce: newNonce()}}})
		if err != nil {
			return nil, err
		}
		id, _ := v.(string)
		s.log.Info("job submitted", "job", id, "model", req.GetJob().GetModel(), "steps", req.GetJob().GetSteps())
		return &pb.SubmitResponse{JobId: id, Steps: req.GetJob().GetSteps()}, nil
	}, func(c pb.CoordinatorClient, ctx context.Context) (*pb.SubmitResponse, error) {
		return c.Submit(ctx, req)
	})
}

// maxEpochs bounds SubmitRequest.epochs.
const maxEpochs = 1e6

// epochSteps returns spec with its steps set to epochs passes over its
// data set as this coordinator reads it, counted as train counts them
// (sharding.EpochSteps).
func (s *Service) epochSteps(spec *pb.JobSpec, epochs float64) (*pb.JobSpec, error) {
	switch {
	case spec.GetSteps() != 0:
		return nil, status.Errorf(codes.InvalidArgument, "job spec: give steps (%d) or epochs (%v), not both", spec.GetSteps(), epochs)
	case !(epochs > 0) || epochs > maxEpochs:
		return nil, status.Errorf(codes.InvalidArgument, "epochs %v is not a number in (0, %g]", epochs, float64(maxEpochs))
	case spec.GetBatch() < 1:
		return nil, status.Errorf(codes.InvalidArgument, "job spec: batch %d is less than 1", spec.GetBatch())
	}
	n, err := dataset.Count(spec.GetDataset(), dataset.Train)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "epochs: coordinator %s cannot read data set %q to count its images: %v", s.node.ID(), spec.GetDataset(), err)
	}
	steps := sharding.EpochSteps(epochs, n, int(spec.GetBatch()))
	if steps < 1 {
		return nil, status.Errorf(codes.InvalidArgument, "%v epochs of the %d images of data set %q at batch %d is less than one step", epochs, n, spec.GetDataset(), spec.GetBatch())
	}
	spec = proto.CloneOf(spec)
	spec.Steps = steps
	return spec, nil
}

// newNonce draws the random part of a job id (SubmitJob.nonce).
func newNonce() string {
	var b [NonceLen / 2]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// statusFromLeader bounds a follower's attempt to answer Status with the
// leader's view.
const statusFromLeader = 500 * time.Millisecond

// Status reads the cluster. A follower answers with the leader's view if
// the leader answers quickly (only the leader knows which workers it
// waits for), else with its own replica's.
func (s *Service) Status(ctx context.Context, req *pb.StatusRequest) (*pb.StatusResponse, error) {
	stale := ""
	if !req.GetLocal() && !isForwarded(ctx) && !s.node.IsLeader() {
		c, err := s.leaderClient()
		if err == nil {
			lctx, cancel := context.WithTimeout(ctx, statusFromLeader)
			var r *pb.StatusResponse
			r, err = c.Status(markForwarded(lctx), &pb.StatusRequest{Local: true})
			cancel()
			if err == nil {
				return r, nil
			}
		}
		stale = fmt.Sprintf("coordinator %s cannot reach the raft leader (%v): this is its own view, which may be behind", s.node.ID(), status.Convert(err).Message())
	}
	resp := &pb.StatusResponse{StaleReason: stale, Version: s.version}
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
	if s.node.IsLeader() {
		s.heardFrom(resp.Workers, resp.Ring)
		for _, j := range resp.Jobs {
			if j.GetState() != JobRunning {
				continue
			}
			if wait, why := s.hold(j.GetId(), resp.Ring); len(wait) > 0 {
				j.State, j.WaitingFor, j.WaitingReason = JobWaiting, wait, why
			}
		}
	}
	return resp, nil
}

// ReportProgress records a completed step of the running job.
func (s *Service) ReportProgress(ctx context.Context, req *pb.ReportProgressRequest) (*pb.ReportProgressResponse, error) {
	if err := s.actingFor(ctx, req.GetWorkerId()); err != nil {
		return nil, err
	}
	return write(ctx, s, func() (*pb.ReportProgressResponse, error) {
		if !s.node.IsLeader() {
			return nil, ErrNotLeader
		}
		if err := s.ringMember("progress", req.GetWorkerId()); err != nil {
			return nil, err
		}
		_, err := s.propose(ctx, &pb.Command{Body: &pb.Command_ReportProgress{ReportProgress: &pb.ReportProgress{
			JobId: req.GetJobId(), Generation: req.GetGeneration(), Step: req.GetStep(),
			Loss: req.GetLoss(), ImagesPerSec: req.GetImagesPerSec(),
		}}})
		if err != nil {
			return nil, err
		}
		s.leases.acquit() // the ring works
		return &pb.ReportProgressResponse{}, nil
	}, func(c pb.CoordinatorClient, ctx context.Context) (*pb.ReportProgressResponse, error) {
		return c.ReportProgress(ctx, req)
	})
}

// PutSample records the running job's latest sample grid, sent by a
// member of the current ring.
func (s *Service) PutSample(ctx context.Context, req *pb.PutSampleRequest) (*pb.PutSampleResponse, error) {
	if err := s.actingFor(ctx, req.GetWorkerId()); err != nil {
		return nil, err
	}
	c := &pb.RecordSample{JobId: req.GetJobId(), Generation: req.GetGeneration(), Step: req.GetStep(), Png: req.GetPng(), WorkerId: req.GetWorkerId()}
	if err := validateRecordSample(c); err != nil {
		return nil, toStatus(err)
	}
	if _, err := png.DecodeConfig(bytes.NewReader(c.GetPng())); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "sample grid: %v", err)
	}
	return write(ctx, s, func() (*pb.PutSampleResponse, error) {
		if _, err := s.propose(ctx, &pb.Command{Body: &pb.Command_RecordSample{RecordSample: c}}); err != nil {
			return nil, err
		}
		return &pb.PutSampleResponse{}, nil
	}, func(cl pb.CoordinatorClient, ctx context.Context) (*pb.PutSampleResponse, error) {
		return cl.PutSample(ctx, req)
	})
}

// LossHistory returns a job's loss history as this coordinator's replica
// holds it (nil if none).
func (s *Service) LossHistory(jobID string) (h []*pb.LossPoint) {
	s.fsm.Read(func(st *State) { h = st.LossHistory(jobID) })
	return h
}

// Sample returns the latest sample grid of a job as this coordinator's
// replica holds it (nil if it has none).
func (s *Service) Sample(jobID string) (step int64, png []byte) {
	s.fsm.Read(func(st *State) { step, png = st.Sample(jobID) })
	return step, png
}

// FinishJob ends the running job; the next queued one starts.
func (s *Service) FinishJob(ctx context.Context, req *pb.FinishJobRequest) (*pb.FinishJobResponse, error) {
	if err := s.actingFor(ctx, req.GetWorkerId()); err != nil {
		return nil, err
	}
	state := pb.JobState_JOB_STATE_DONE
	if req.GetFailed() {
		state = pb.JobState_JOB_STATE_FAILED
	}
	return write(ctx, s, func() (*pb.FinishJobResponse, error) {
		if !s.node.IsLeader() {
			return nil, ErrNotLeader
		}
		if err := s.ringMember("the end of job "+req.GetJobId(), req.GetWorkerId()); err != nil {
			return nil, err
		}
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
