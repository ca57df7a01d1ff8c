// Package localcluster runs a whole gencluster cluster inside one process:
// a raft group of coordinators and a set of workers, each a real gRPC
// server on loopback. It backs `gencluster local` and the end-to-end tests;
// nothing in it is simulated.
package localcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/ckptstore"
	"github.com/gencluster/gencluster/coordinator"
	"github.com/gencluster/gencluster/trust"
	"github.com/gencluster/gencluster/worker"
)

// Config configures a Cluster.
type Config struct {
	Coordinators int    // raft group size (1 or 3 usually)
	StateDir     string // coordinators' and workers' data dirs go below it
	// Worker is the template of every worker's configuration; Coordinators,
	// Listen and DataDir are filled in.
	Worker worker.Config
	Lease  time.Duration // worker lease (default coordinator.DefaultLease)
	Logger *slog.Logger
	// TLS makes every connection mutual TLS with roles checked, as
	// --tls-dir does: Start makes a CA and the three roles' certificates
	// under StateDir/certs; NewClient dials with the client's.
	TLS bool
	// Version is reported by the coordinators' Status.
	Version string
}

// Cluster is a running embedded cluster.
type Cluster struct {
	cfg    Config
	log    *slog.Logger
	addrs  []string
	coords []*coord
	creds  map[trust.Role]*trust.Credentials // with Config.TLS

	ctx    context.Context // workers run under it
	cancel context.CancelFunc

	mu      sync.Mutex
	workers []*Worker
	next    int
}

type coord struct {
	srv    *grpc.Server
	fsm    *coordinator.FSM
	node   *coordinator.Node
	svc    *coordinator.Service
	served chan error
	closed bool
}

// Worker is one worker of the cluster.
type Worker struct {
	*worker.Worker
	dataDir string
	cancel  context.CancelFunc
	done    chan struct{}
	err     error
}

// Start starts the coordinators (they elect a leader among themselves).
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Coordinators < 1 {
		return nil, fmt.Errorf("localcluster: %d coordinators", cfg.Coordinators)
	}
	if cfg.Lease == 0 {
		cfg.Lease = coordinator.DefaultLease
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Listen first, so that every coordinator knows the whole group.
	var peers []coordinator.Peer
	var lis []net.Listener
	for i := range cfg.Coordinators {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			for _, l := range lis {
				l.Close()
			}
			return nil, fmt.Errorf("localcluster: coordinator listener: %w", err)
		}
		lis = append(lis, l)
		peers = append(peers, coordinator.Peer{ID: "c" + strconv.Itoa(i), Addr: l.Addr().String()})
	}
	creds, err := makeCredentials(cfg, log)
	if err != nil {
		for _, l := range lis {
			l.Close()
		}
		return nil, err
	}
	var peerDial, probeDial []grpc.DialOption
	if creds != nil {
		peerDial = []grpc.DialOption{creds[trust.Coordinator].DialOption(trust.Coordinator)}
		probeDial = []grpc.DialOption{creds[trust.Coordinator].DialOption(trust.Worker)}
		cfg.Worker.Credentials = creds[trust.Worker]
	}
	wctx, cancel := context.WithCancel(context.Background())
	c := &Cluster{cfg: cfg, log: log, ctx: wctx, cancel: cancel, creds: creds}
	for i, p := range peers {
		srv := grpc.NewServer(append([]grpc.ServerOption{grpc.MaxRecvMsgSize(64 << 20)},
			trust.ServerOptions(creds[trust.Coordinator], nil, trust.CoordinatorPolicy(), log)...)...)
		fsm := coordinator.NewFSM(log)
		node, err := coordinator.NewNode(ctx, coordinator.NodeConfig{
			ID: p.ID, Addr: p.Addr, DataDir: filepath.Join(cfg.StateDir, p.ID), Peers: peers, FSM: fsm, Logger: log, DialOptions: peerDial,
		}, srv)
		if err != nil {
			for _, l := range lis[i:] {
				l.Close()
			}
			return nil, errors.Join(err, c.Close())
		}
		store, err := ckptstore.Open(filepath.Join(cfg.StateDir, p.ID, "checkpoints"), log)
		if err != nil {
			for _, l := range lis[i:] {
				l.Close()
			}
			return nil, errors.Join(err, node.Close(ctx), c.Close())
		}
		svc := coordinator.NewService(coordinator.ServiceConfig{Node: node, FSM: fsm, Lease: cfg.Lease, Logger: log, Checkpoints: store,
			RequireWorkerSecret: true, DialOptions: peerDial, ProbeDialOptions: probeDial, Version: cfg.Version})
		pb.RegisterCoordinatorServer(srv, svc)
		co := &coord{srv: srv, fsm: fsm, node: node, svc: svc, served: make(chan error, 1)}
		go func(l net.Listener) { co.served <- srv.Serve(l) }(lis[i])
		c.coords = append(c.coords, co)
		c.addrs = append(c.addrs, p.Addr)
	}
	return c, nil
}

// makeCredentials makes a CA and the roles' credentials under
// StateDir/certs when cfg.TLS is set (nil otherwise).
func makeCredentials(cfg Config, log *slog.Logger) (map[trust.Role]*trust.Credentials, error) {
	if !cfg.TLS {
		return nil, nil
	}
	dir := filepath.Join(cfg.StateDir, "certs")
	if err := trust.Init(dir, nil, trust.IssueOptions{}); err != nil {
		return nil, fmt.Errorf("localcluster: %w", err)
	}
	creds := map[trust.Role]*trust.Credentials{}
	for _, r := range trust.Roles() {
		c, err := trust.Load(filepath.Join(dir, string(r)), log)
		if err != nil {
			return nil, fmt.Errorf("localcluster: %w", err)
		}
		creds[r] = c
	}
	return creds, nil
}

// NewClient returns a client of the coordinators (with the client role's
// credentials if the cluster runs TLS); the caller closes it.
func (c *Cluster) NewClient() (*coordinator.Client, error) {
	if cl := c.creds[trust.Client]; cl != nil {
		return coordinator.NewClient(c.addrs, cl.DialOption(trust.Coordinator))
	}
	return coordinator.NewClient(c.addrs)
}

// Coordinator returns coordinator i's raft node and replicated state (for
// metrics and inspection; do not close them).
func (c *Cluster) Coordinator(i int) (*coordinator.Node, *coordinator.FSM) {
	return c.coords[i].node, c.coords[i].fsm
}

// Service returns coordinator i's service (for reads in the same process,
// e.g. the dashboard).
func (c *Cluster) Service(i int) *coordinator.Service { return c.coords[i].svc }

// Addrs returns the coordinators' addresses.
func (c *Cluster) Addrs() []string { return c.addrs }

// AddWorker starts one more worker (it joins at once).
func (c *Cluster) AddWorker() (*Worker, error) {
	c.mu.Lock()
	i := c.next
	c.next++
	c.mu.Unlock()
	return c.startWorker(filepath.Join(c.cfg.StateDir, "w"+strconv.Itoa(i)))
}

// Restart starts a worker again from the data directory of w (which must
// have been stopped or killed): it comes back with the same id.
func (c *Cluster) Restart(w *Worker) (*Worker, error) {
	return c.startWorker(w.dataDir)
}

func (c *Cluster) startWorker(dataDir string) (*Worker, error) {
	wc := c.cfg.Worker
	wc.Coordinators = c.addrs
	wc.Listen = "127.0.0.1:0"
	wc.DataDir = dataDir
	if wc.Logger == nil {
		wc.Logger = c.log
	}
	w, err := worker.New(wc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(c.ctx)
	cw := &Worker{Worker: w, dataDir: dataDir, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(cw.done)
		cw.err = w.Run(ctx)
	}()
	c.mu.Lock()
	c.workers = append(c.workers, cw)
	c.mu.Unlock()
	return cw, nil
}

// Stop ends the worker's Run (it leaves the cluster) and closes it.
func (w *Worker) Stop() error {
	w.cancel()
	<-w.done
	return errors.Join(w.err, w.Close())
}

// Kill cuts the worker off without a goodbye: its connections and
// server close and it never leaves, as if its process had died.
func (w *Worker) Kill() error {
	err := w.Abort() // first, so that Run cannot leave gracefully
	w.cancel()
	<-w.done
	return err
}

// Submit queues a job.
func (c *Cluster) Submit(ctx context.Context, spec *pb.JobSpec) (string, error) {
	cl, err := c.NewClient()
	if err != nil {
		return "", err
	}
	defer cl.Close()
	return cl.Submit(ctx, spec)
}

// Await reads the cluster's status every 5 ms until cond holds; it gives
// up when ctx ends or after timeout, naming what it waited for.
func (c *Cluster) Await(ctx context.Context, timeout time.Duration, what string, cond func(*pb.StatusResponse) bool) error {
	cl, err := c.NewClient()
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cl.Status(sctx)
		scancel()
		if err == nil && cond(st) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("localcluster: waiting for %s: %w", what, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// AwaitJob waits until the job satisfies cond and returns it as the
// status showed it then.
func (c *Cluster) AwaitJob(ctx context.Context, timeout time.Duration, id string, cond func(*pb.JobInfo) bool) (*pb.JobInfo, error) {
	var job *pb.JobInfo
	err := c.Await(ctx, timeout, "job "+id, func(st *pb.StatusResponse) bool {
		for _, j := range st.GetJobs() {
			if j.GetId() == id && cond(j) {
				job = j
				return true
			}
		}
		return false
	})
	return job, err
}

// AwaitWorkers waits until n workers are registered.
func (c *Cluster) AwaitWorkers(ctx context.Context, timeout time.Duration, n int) error {
	return c.Await(ctx, timeout, fmt.Sprintf("%d workers", n), func(st *pb.StatusResponse) bool { return len(st.GetWorkers()) == n })
}

// Close stops every worker, then the coordinators, and removes nothing on
// disk (StateDir is the caller's).
func (c *Cluster) Close() error {
	c.mu.Lock()
	ws := c.workers
	c.workers = nil
	c.mu.Unlock()
	var err error
	for _, w := range ws {
		select {
		case <-w.done:
			err = errors.Join(err, w.Close()) // already ended; Close is idempotent
		default:
			err = errors.Join(err, w.Stop())
		}
	}
	c.cancel()
	for _, co := range c.coords {
		err = errors.Join(err, co.close())
	}
	return err
}

// KillCoordinator stops coordinator i abruptly (raft and its server).
func (c *Cluster) KillCoordinator(i int) error {
	return c.coords[i].close()
}

func (co *coord) close() error {
	if co.closed {
		return nil
	}
	co.closed = true
	co.svc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := co.node.Close(ctx)
	co.srv.Stop()
	<-co.served
	return err
}
