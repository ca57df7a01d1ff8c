package worker

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gencluster/gencluster/allreduce"
	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/coordinator"
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
	// DataDir holds the worker's id and, unless CheckpointDir is set, the
	// checkpoints it writes.
	DataDir string
	// CheckpointDir, if set, is where checkpoints go (a job's own
	// subdirectory is not added): the embedded cluster points every worker
	// at its --out.
	CheckpointDir string
	// Threads is the compute threads of the worker's kernels.
	Threads int
	// RingTimeout is how long a silent ring peer is waited for
	// (allreduce.Config.Timeout; default 5s).
	RingTimeout time.Duration
	// Logger receives the worker's logs (nil: discard).
	Logger *slog.Logger
	// OnStep, if set, is called after every completed step (on every rank).
	OnStep func(StepInfo)
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
	// Params are the replica's parameters after the step, in the model's
	// order; valid only during the OnStep call, which must not change them.
	Params [][]float32
}

// Worker is one member of a training ring.
type Worker struct {
	cfg    Config
	id     string
	log    *slog.Logger
	lis    net.Listener
	addr   string // advertised
	srv    *grpc.Server
	member *allreduce.Member
	client *coordinator.Client

	assign  atomic.Pointer[pb.Assignment]
	changed chan struct{} // cap 1: assign changed
	leaseMs atomic.Int64

	ringMu sync.Mutex
	ring   *allreduce.Generation // the ring member's current generation; nil before the first

	serveErr chan error
	closeMu  sync.Mutex
	closed   bool

	// testBucketHook, if set (by tests, before Run), runs on the train
	// loop before each gradient bucket of a step is started.
	testBucketHook func(step int64, bucket int)
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
	id, err := loadID(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("worker: listen on %s: %w", cfg.Listen, err)
	}
	srv := grpc.NewServer(allreduce.ServerOptions()...)
	member, err := allreduce.NewMember(allreduce.Config{Timeout: cfg.RingTimeout, Logger: log}, srv)
	if err != nil {
		lis.Close()
		return nil, err
	}
	client, err := coordinator.NewClient(cfg.Coordinators)
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
		cfg: cfg, id: id, log: log.With("worker", id), lis: lis, srv: srv, member: member, client: client,
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
	return errors.Join(err, w.client.Close())
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
	return errors.Join(w.member.Abort(), cerr)
}

// loadID reads the worker id kept in dir, creating one the first time, so a
// restarted worker comes back as itself.
func loadID(dir string) (string, error) {
	path := filepath.Join(dir, "worker-id")
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if id == "" || len(id) > 128 {
			return "", fmt.Errorf("worker: %s holds no valid worker id", path)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("worker: read id: %w", err)
	}
	id := "w-" + strings.ToLower(rand.Text()[:10])
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("worker: write id: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("worker: write id: %w", err)
	}
	return id, nil
}

// Run joins the cluster and trains whatever job the coordinators assign
// until ctx ends. A job's failure (a diverged loss, a bad data set) is
// reported to the coordinators, and the worker waits for the next job.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.join(ctx); err != nil {
		return err
	}
	hctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { w.heartbeats(hctx) })
	err := w.trainLoop(ctx)
	cancel()
	wg.Wait()
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

// join registers with the coordinators, retrying until one answers. A
// worker restarted on another port finds its id still registered at the
// old address until its predecessor is reported failed or its lease
// expires: it waits for that.
func (w *Worker) join(ctx context.Context) error {
	var r *pb.JoinResponse
	var err error
	for warned := false; ; warned = true {
		r, err = w.client.Join(ctx, &pb.JoinRequest{WorkerId: w.id, Addr: w.Addr()})
		if status.Code(err) != codes.AlreadyExists {
			break
		}
		if !warned {
			w.log.Warn("this worker id is still registered at its old address; waiting for that registration to end", "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("worker %s: join: %w", w.id, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("worker %s: join: %w", w.id, err)
	}
	w.leaseMs.Store(r.GetLeaseMs())
	w.setAssignment(r.GetAssignment())
	w.log.Info("joined", "addr", w.Addr(), "generation", r.GetAssignment().GetGeneration(), "rank", r.GetAssignment().GetRank())
	return nil
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
	if old != nil && (a.GetGeneration() < old.GetGeneration() ||
		old.GetGeneration() == a.GetGeneration() && old.GetJobId() == a.GetJobId()) {
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
	r, err := w.client.Heartbeat(ctx, &pb.HeartbeatRequest{WorkerId: w.id, Addr: w.Addr(), Generation: gen})
	if status.Code(err) == codes.NotFound {
		w.log.Warn("registration lost; joining again")
		return w.join(ctx)
	}
	if err != nil {
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
	g, err := w.member.SetRing(ringOf(a))
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
