package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gencluster/gencluster/allreduce"
	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/ckptstore"
	"github.com/gencluster/gencluster/coordinator"
	"github.com/gencluster/gencluster/trust"
)

// Config configures a Worker.
type Config struct {
	// Coordinators are the addresses to join through (any of them; the
	// worker learns the rest).
	Coordinators []string
	// Listen is the host:port of the worker's gRPC server ("HOST:0" picks
	// a port).
	Listen string
	// Advertise is the host:port ring peers dial; "" means the listener's
	// address, with this machine's host name if it listens on all
	// interfaces.
	Advertise string
	// DataDir holds the worker's id, its secret, its lock and its local
	// store of its job's checkpoints (DataDir/checkpoints: the newest few
	// it wrote or fetched; the coordinators hold the job's checkpoints).
	DataDir string
	// Threads is the compute threads of the worker's kernels.
	Threads int
	// RingTimeout is how long a silent ring peer is waited for
	// (allreduce.Config.Timeout; default 5s).
	RingTimeout time.Duration
	// Credentials, if set, make every connection mutual TLS (package
	// trust): the worker serves its ring and health with them, admits only
	// the roles trust.WorkerPolicy allows, dials coordinators requiring the
	// coordinator role and ring peers requiring the worker role. nil:
	// plaintext.
	Credentials *trust.Credentials
	// Token, if set without Credentials, is the join token the worker
	// presents to coordinators (TLS, the coordinators' certificates checked
	// against the token's CA pins); it serves its ring over TLS with a
	// self-signed certificate made at start, and the ring authenticates
	// both ends of each stream by its keys (allreduce.Config.RequireKeys).
	// Ignored with Credentials.
	Token *trust.Token
	// Logger receives the worker's logs (nil: discard).
	Logger *slog.Logger
	// OnStep, if set, is called after every completed step (on every rank).
	OnStep func(StepInfo)
	// OnCheckpoint, if set, is called with the outcome of every checkpoint
	// this worker takes as rank 0 (on the checkpoint writer's goroutine,
	// or the train loop's for the final one).
	OnCheckpoint func(CheckpointEvent)
}

// StepInfo describes one completed training step on one worker.
type StepInfo struct {
	WorkerID     string
	JobID        string
	Step, Total  int64
	Loss         float64 // nats per image, averaged over the global batch
	ImagesPerSec float64 // global images per second since this worker's generation began
	Generation   uint64
	Rank, World  int
	Elapsed      time.Duration // since the worker started the job
	// Comm is the step's all-reduce time, from the first gradient bucket's
	// start to the last one's end; Exposed is the part of it after the
	// backward pass ended (the rest was hidden behind backward).
	Comm, Exposed time.Duration
	// StepTime is the whole step (data, compute, all-reduce waits and
	// optimizer); Compute the local forward and backward; Optimizer the
	// parameter update. AllReducedBytes is what this rank summed over the
	// ring (its gradients and the loss), LocalImages the images it computed.
	StepTime, Compute, Optimizer time.Duration
	AllReducedBytes              int64
	LocalImages                  int
	// Params are the replica's parameters after the step, in the model's
	// order; valid only during the OnStep call, which must not change them.
	Params [][]float32
}

// Worker is one member of a training ring.
type Worker struct {
	cfg     Config
	compute atomic.Uint64 // float64 bits: median compute seconds per step over the last steps (heartbeats report it)
	id      string
	secret  string   // issued to id at its first join; "" until then
	lock    *os.File // holds the data dir
	log     *slog.Logger
	lis     net.Listener
	addr    string // advertised
	srv     *grpc.Server
	member  *allreduce.Member
	client  *coordinator.Client
	store   *ckptstore.Store // DataDir/checkpoints

	assign   atomic.Pointer[pb.Assignment]
	readyJob atomic.Pointer[string] // the job whose replica this worker has built; told to the coordinators
	changed  chan struct{}          // cap 1: assign changed
	leaseMs  atomic.Int64
	reported atomic.Uint64         // failed generations reported (and taken)
	guard    *trust.Guard          // the ring server's (nil without certificates)
	joinErr  atomic.Pointer[error] // why the last join attempt failed (for /readyz)

	ringMu sync.Mutex
	ring   *allreduce.Generation // the ring member's current generation; nil before the first

	runCancel atomic.Pointer[context.CancelCauseFunc] // ends Run (stop)

	serveErr chan error
	closeMu  sync.Mutex
	closed   bool

	// testBucketHook, if set (by tests, before Run), runs on the train
	// loop before each gradient bucket of a step is started;
	// testOpenHook before each replica is built.
	testBucketHook func(step int64, bucket int)
	testOpenHook   func()

	// putCheckpoint and getCheckpoint, if set (by tests), replace the
	// client's PutCheckpoint and GetCheckpoint.
	putCheckpoint func(ctx context.Context, path string, hdr *pb.CheckpointHeader) (*pb.CheckpointManifest, error)
	getCheckpoint func(ctx context.Context, req *pb.GetCheckpointRequest, dest func(*pb.CheckpointHeader) (string, error)) (*pb.CheckpointHeader, error)
}

// Ready says whether the worker is ready (nil) or why not: it has joined
// the cluster and built the replica of the job it is assigned (a worker
// out of the job's ring, unfit for it, is ready: for the next job).
func (w *Worker) Ready() error {
	a := w.assign.Load()
	if a == nil {
		if p := w.joinErr.Load(); p != nil {
			return fmt.Errorf("not joined yet: %w", *p)
		}
		return errors.New("not joined yet")
	}
	if job := a.GetJobId(); job != "" && a.GetRank() >= 0 {
		if p := w.readyJob.Load(); p == nil || *p != job {
			return fmt.Errorf("building the replica of job %s", job)
		}
	}
	return nil
}

// New opens the worker's listener and gRPC server (serving the ring
// service); Run joins the cluster and trains.
func New(cfg Config) (*Worker, error) {
	if len(cfg.Coordinators) == 0 {
		return nil, errors.New("worker: no coordinator address (--join)")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("worker: no data directory (--data-dir)")
	}
	if cfg.Threads < 1 {
		cfg.Threads = 1
	}
	if cfg.RingTimeout == 0 {
		cfg.RingTimeout = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("worker: data directory: %w", err)
	}
	lock, err := lockDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	w, err := newWorker(cfg, log, lock)
	if err != nil {
		unlockDir(lock)
		return nil, err
	}
	return w, nil
}

func newWorker(cfg Config, log *slog.Logger, lock *os.File) (*Worker, error) {
	id, err := loadID(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	secret, err := loadSecret(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	store, err := ckptstore.Open(filepath.Join(cfg.DataDir, checkpointsDir), log)
	if err != nil {
		return nil, fmt.Errorf("worker: local checkpoint store: %w", err)
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("worker: listen on %s: %w", cfg.Listen, err)
	}
	srvOpts := allreduce.ServerOptions()
	var guard *trust.Guard
	var ringDial, coordDial []grpc.DialOption
	if c := cfg.Credentials; c != nil {
		if c.Role() != trust.Worker {
			lis.Close()
			return nil, fmt.Errorf("worker: its credentials hold a %s certificate, not a worker one", c.Role())
		}
		opts, g := trust.GuardedServerOptions(c, nil, trust.WorkerPolicy(), log)
		srvOpts, guard = append(srvOpts, opts...), g
		ringDial = []grpc.DialOption{c.DialOption(trust.Worker)}
		coordDial = []grpc.DialOption{c.DialOption(trust.Coordinator)}
	} else if tok := cfg.Token; tok != nil {
		tc, err := trust.SelfSignedServerTLS("gencluster worker")
		if err != nil {
			lis.Close()
			return nil, fmt.Errorf("worker: %w", err)
		}
		srvOpts = append(srvOpts, grpc.Creds(credentials.NewTLS(tc)))
		ringDial = []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(trust.UnverifiedClientTLS()))}
		coordDial = tok.DialOption(trust.Coordinator)
	}
	srv := grpc.NewServer(srvOpts...)
	member, err := allreduce.NewMember(allreduce.Config{Timeout: cfg.RingTimeout, Logger: log, DialOptions: ringDial,
		RequireKeys: cfg.Credentials != nil || cfg.Token != nil}, srv)
	if err != nil {
		lis.Close()
		return nil, err
	}
	// The coordinators probe a worker reported failed through the standard
	// health service: answering it is what "alive" means.
	healthpb.RegisterHealthServer(srv, health.NewServer())
	client, err := coordinator.NewClient(cfg.Coordinators, coordDial...)
	if err != nil {
		lis.Close()
		return nil, err
	}
	advertise := cfg.Advertise
	if advertise == "" {
		if advertise, err = advertised(lis.Addr()); err != nil {
			lis.Close()
			client.Close()
			return nil, err
		}
	}
	w := &Worker{
		cfg: cfg, id: id, secret: secret, lock: lock, log: log.With("worker", id), lis: lis, srv: srv, member: member, client: client, store: store, guard: guard,
		addr: advertise, changed: make(chan struct{}, 1), serveErr: make(chan error, 1),
	}
	go func() { w.serveErr <- srv.Serve(lis) }()
	return w, nil
}

// ID returns the worker's id.
func (w *Worker) ID() string { return w.id }

// Addr returns the address ring peers dial.
func (w *Worker) Addr() string { return w.addr }

// advertised is the address peers dial for a listener: its own, or with
// this machine's host name if it listens on every interface.
func advertised(a net.Addr) (string, error) {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return "", fmt.Errorf("worker: listener address %s: %w", a, err)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if host, err = os.Hostname(); err != nil {
			return "", fmt.Errorf("worker: listening on all interfaces and no host name to advertise (give --advertise): %w", err)
		}
	}
	return net.JoinHostPort(host, port), nil
}

// Close stops the ring member and the gRPC server. Call it after Run has
// returned.
func (w *Worker) Close() error {
	w.closeMu.Lock()
	defer w.closeMu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	err := w.member.Close()
	w.srv.Stop()
	<-w.serveErr
	return errors.Join(err, w.client.Close(), unlockDir(w.lock))
}

// Abort stops the worker as its process dying would: the gRPC server and
// every connection to it drop at once, before anything else is closed, and
// the worker does not leave the cluster. For tests and benchmarks of
// failures; call it instead of Close.
func (w *Worker) Abort() error {
	w.closeMu.Lock()
	if w.closed {
		w.closeMu.Unlock()
		return nil
	}
	w.closed = true
	w.closeMu.Unlock()
	cerr := w.client.Close() // first: a dead process reports nothing
	w.srv.Stop()
	<-w.serveErr
	return errors.Join(w.member.Abort(), cerr, unlockDir(w.lock))
}

// Run joins the cluster and trains whatever job the coordinators assign
// until ctx ends. A job's failure (a diverged loss, a bad data set) is
// reported to the coordinators, and the worker waits for the next job.
func (w *Worker) Run(parent context.Context) error {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	w.runCancel.Store(&cancel)
	// A worker joins the ring only with its replica ready: if a job runs,
	// its data set and model are built before the join, so the ring never
	// waits for a newcomer's loading.
	pre := w.prepare(ctx)
	if err := w.join(ctx, true); err != nil {
		if pre != nil {
			pre.close()
		}
		return err
	}
	hctx, hcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { w.heartbeats(hctx) })
	err := w.trainLoop(ctx, pre)
	hcancel()
	wg.Wait()
	if cause := context.Cause(ctx); errors.Is(cause, errTakenOver) {
		return fmt.Errorf("worker %s: %w", w.id, cause) // and never Leave: the id is the other process's now
	}
	if ctx.Err() == nil {
		return err
	}
	if w.isClosed() {
		return nil // closed under our feet: gone without a word, like a dead process
	}
	// Stopped: leave at once, so the ring re-forms without waiting for the
	// lease to expire.
	lctx, lcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer lcancel()
	if err := w.client.Leave(lctx, w.id); err != nil {
		w.log.Warn("leave", "err", err)
	} else {
		w.log.Info("left the cluster")
	}
	return nil
}

// prepare builds the replica of the job the cluster runs, if any, before
// the worker joins; nil if there is none or the coordinators do not answer
// in time (the train loop then builds it after joining).
func (w *Worker) prepare(ctx context.Context) *job {
	sctx, cancel := context.WithTimeout(ctx, joinWarnEvery)
	st, err := w.client.Status(sctx)
	cancel()
	if err != nil {
		return nil
	}
	for _, j := range st.GetJobs() {
		if j.GetState() != coordinator.JobRunning && j.GetState() != coordinator.JobWaiting {
			continue
		}
		w.log.Info("a job runs: building its replica before joining", "job", j.GetId())
		nj, err := w.openJob(ctx, &pb.Assignment{JobId: j.GetId(), Job: j.GetSpec(), Checkpoint: manifestOf(j.GetId(), j.GetLastCheckpoint())})
		if err != nil {
			w.log.Warn("cannot build the running job's replica", "job", j.GetId(), "err", err)
			return nil
		}
		w.setReady(nj.id)
		return nj
	}
	return nil
}

// A worker whose coordinators do not answer says so after its first
// attempt (joinAttempt) and then every joinWarnEvery while it keeps trying.
const (
	joinAttempt   = 2 * time.Second
	joinWarnEvery = 5 * time.Second
)

// join registers with the coordinators, retrying until one answers (and
// saying so in the log every few seconds while none does). The first join
// of an id is issued a secret, kept in the data dir before anything else
// happens; with it, a worker restarted on a new address takes over its
// registration at once. A worker holding no secret whose id belongs to
// another data dir (its secret was never saved) becomes a new worker.
func (w *Worker) join(ctx context.Context, first bool) error {
	start := time.Now()
	warned := start
	for {
		actx, cancel := context.WithTimeout(ctx, joinAttempt)
		r, err := w.client.Join(actx, &pb.JoinRequest{WorkerId: w.id, Addr: w.Addr(), Secret: w.secret, ReadyJob: w.ready()})
		cancel()
		switch {
		case err == nil:
			if s := r.GetSecret(); s != "" {
				if err := saveSecret(w.cfg.DataDir, s); err != nil {
					return err
				}
				w.secret = s
			}
			w.client.SetWorker(w.id, w.secret) // every later call proves it is this worker
			w.leaseMs.Store(r.GetLeaseMs())
			w.setAssignment(r.GetAssignment())
			w.log.Info("joined", "addr", w.Addr(), "generation", r.GetAssignment().GetGeneration(), "rank", r.GetAssignment().GetRank())
			return nil
		case status.Code(err) == codes.PermissionDenied && w.secret == "" && first:
			id, nerr := newID(w.cfg.DataDir)
			if nerr != nil {
				return nerr
			}
			w.log.Warn("this worker id belongs to a data dir that holds its secret; joining as a new worker", "old_id", w.id, "id", id, "err", err)
			w.id, w.log = id, w.log.With("worker", id)
			continue
		case status.Code(err) == codes.PermissionDenied:
			return fmt.Errorf("worker %s: join: %w (the data dir's secret is not the one the coordinators issued to this id; remove %s and %s from %s to join as a new worker)",
				w.id, err, idFile, secretFile, w.cfg.DataDir)
		case status.Code(err) == codes.AlreadyExists:
			// Registered at its old address by a coordinator that has no
			// secret for it (state from before secrets): wait for the
			// old registration to end.
		case ctx.Err() != nil:
			return fmt.Errorf("worker %s: join: %w", w.id, ctx.Err())
		case status.Code(err) == codes.FailedPrecondition:
			// The leader cannot reach the advertised address (yet: a
			// name may take a moment to be published). Keep trying,
			// saying why.
		case status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded && !errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("worker %s: join: %w", w.id, err)
		}
		w.joinErr.Store(&err)
		if time.Since(warned) >= joinWarnEvery || warned == start {
			w.log.Warn("not joined yet; still trying", "coordinators", w.client.Addrs(), "for", time.Since(start).Round(time.Second), "err", err)
			warned = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("worker %s: join: %w", w.id, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// ready is the job whose replica this worker holds ("" if none).
func (w *Worker) ready() string {
	if p := w.readyJob.Load(); p != nil {
		return *p
	}
	return ""
}

// setReady records the job whose replica this worker holds.
func (w *Worker) setReady(job string) { w.readyJob.Store(&job) }

// errTakenOver ends Run when another process took this worker's id over.
var errTakenOver = errors.New("this worker's id was taken over by a process at another address (holding its secret)")

// stop ends Run with cause.
func (w *Worker) stop(cause error) {
	if c := w.runCancel.Load(); c != nil {
		(*c)(cause)
	}
}

// setAssignment records a newer assignment and wakes the train loop. An
// assignment older than the one held (from a coordinator that has not yet
// learnt it lost leadership) is ignored: what a worker acts on never goes
// back in generation.
func (w *Worker) setAssignment(a *pb.Assignment) {
	if a == nil {
		return
	}
	old := w.assign.Load()
	if old != nil && (a.GetGeneration() < old.GetGeneration() || proto.Equal(old, a)) {
		return
	}
	w.assign.Store(a)
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// heartbeats renews the lease and picks up new assignments until ctx ends;
// a lost registration (the lease expired) is renewed by joining again.
func (w *Worker) heartbeats(ctx context.Context) {
	for {
		every := time.Duration(w.leaseMs.Load()) * time.Millisecond / 4
		every = max(every, 50*time.Millisecond)
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		if err := w.heartbeat(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("heartbeat failed", "err", err)
		}
	}
}

// heartbeat renews the lease once and records the assignment it returns.
func (w *Worker) heartbeat(ctx context.Context) error {
	var gen uint64
	if a := w.assign.Load(); a != nil {
		gen = a.GetGeneration()
	}
	r, err := w.client.Heartbeat(ctx, &pb.HeartbeatRequest{WorkerId: w.id, Addr: w.Addr(), Generation: gen, ReadyJob: w.ready(),
		ComputeSeconds: math.Float64frombits(w.compute.Load())})
	switch status.Code(err) {
	case codes.OK:
	case codes.NotFound:
		w.log.Warn("registration lost; joining again")
		return w.join(ctx, false)
	case codes.AlreadyExists:
		// Another process holding this data dir's secret took the id over
		// at another address: this one is a leftover.
		w.stop(fmt.Errorf("%w: %v", errTakenOver, err))
		return err
	default:
		return err
	}
	w.leaseMs.Store(r.GetLeaseMs())
	w.setAssignment(r.GetAssignment())
	// A newer generation ends the ring's current one at once, rather than
	// at the next step boundary: a peer that moved on is not waited for.
	if a := r.GetAssignment(); a.GetJobId() != "" {
		if err := w.switchRing(a); err != nil {
			w.log.Warn("switch ring", "err", err)
		}
	}
	return nil
}

// switchRing moves the ring member to a's generation if it is newer than
// the one it is in.
func (w *Worker) switchRing(a *pb.Assignment) error {
	_, err := w.ringFor(a)
	return err
}

// ringFor returns the ring member's generation for assignment a, switching
// the member to it if it is in an older one (or in another job's ring). It
// returns nil if the member is already in a newer generation: a is stale.
func (w *Worker) ringFor(a *pb.Assignment) (*allreduce.Generation, error) {
	w.ringMu.Lock()
	defer w.ringMu.Unlock()
	if w.ring != nil {
		cur := w.ring.Ring()
		switch {
		case cur.JobID == a.GetJobId() && cur.Generation == a.GetGeneration():
			return w.ring, nil
		case a.GetGeneration() < cur.Generation:
			return nil, nil
		}
		// A newer generation, or the same ring moving on to the next job.
	}
	ring := ringOf(a)
	if w.secret != "" {
		// Sign the hello to the successor and the answer to the
		// predecessor; the coordinators gave us the keys our predecessor
		// signs with and our successor answers with.
		h := trust.SecretHash(w.secret)
		ring.SendKey = trust.RingKey(h, ring.JobID, ring.Generation)
		ring.AcceptKey = trust.RingAcceptKey(h, ring.JobID, ring.Generation)
	}
	ring.RecvKey, ring.NextAcceptKey = a.GetPrevRingKey(), a.GetNextAcceptKey()
	g, err := w.member.SetRing(ring)
	if err != nil {
		return nil, err
	}
	w.ring = g
	return g, nil
}

// currentRing returns the ring member's current generation (nil before
// the first).
func (w *Worker) currentRing() *allreduce.Generation {
	w.ringMu.Lock()
	defer w.ringMu.Unlock()
	return w.ring
}

// isClosed reports whether Close or Abort was called.
func (w *Worker) isClosed() bool {
	w.closeMu.Lock()
	defer w.closeMu.Unlock()
	return w.closed
}

// awaitNewer returns the first assignment whose generation is above gen,
// polling the coordinators at short intervals (faster than the heartbeat),
// or nil once ctx ends.
func (w *Worker) awaitNewer(ctx context.Context, gen uint64) *pb.Assignment {
	for {
		if a := w.assign.Load(); a != nil && a.GetGeneration() > gen {
			return a
		}
		if err := w.heartbeat(ctx); err != nil && ctx.Err() == nil {
			w.log.Debug("poll assignment", "err", err)
		}
		if a := w.assign.Load(); a != nil && a.GetGeneration() > gen {
			return a
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.changed:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// RefusedFrames is the number of ring streams and frames this worker has
// refused (unsigned or stale hellos, streams not from its assigned
// predecessor, answers not from its assigned successor).
func (w *Worker) RefusedFrames() uint64 { return w.member.Refused() }

// RefusedCalls is the number of gRPC calls this worker's server refused,
// by method (nil without certificates: then nothing is refused by role).
func (w *Worker) RefusedCalls() map[string]uint64 {
	if w.guard == nil {
		return nil
	}
	return w.guard.Refused()
}

// FailuresReported is the number of failed ring generations this worker
// reported that the coordinators took.
func (w *Worker) FailuresReported() uint64 { return w.reported.Load() }
