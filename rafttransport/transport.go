package rafttransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// MaxMessageSize bounds one raft message on the wire (an AppendEntries
// batch or a snapshot chunk). Outgoing calls allow it; the grpc.Server the
// transport is registered on must be built with
// grpc.MaxRecvMsgSize(MaxMessageSize) (gRPC's default is 4 MiB) if log
// entries can be large, or replication of a batch of them fails with
// ResourceExhausted.
const MaxMessageSize = 64 << 20

const (
	// DefaultTimeout bounds one outgoing raft RPC (and each response of a
	// pipeline); InstallSnapshot gets it per snapshotTimeoutScale bytes.
	DefaultTimeout       = 10 * time.Second
	snapshotTimeoutScale = 256 << 10
	snapshotChunkSize    = 256 << 10
	pipelineMaxInFlight  = 64
)

// Config configures a Transport.
type Config struct {
	// Addr is this node's advertised raft address (host:port), the address
	// its peers dial: the address of the grpc.Server the transport is
	// registered on.
	Addr string
	// Timeout bounds each outgoing RPC; DefaultTimeout if zero.
	Timeout time.Duration
	// DialOptions replace the default credentials (insecure) for outgoing
	// connections; the transport adds its own backoff and size options.
	DialOptions []grpc.DialOption
	// Logger receives the transport's logs (a peer unreachable, reachable
	// again; a cluster id adopted); discarded if nil.
	Logger *slog.Logger
	// Faults, if not nil, makes the network misbehave: tests use it to
	// partition nodes and lose replies. Nil in production.
	Faults Faults
}

// Transport is a raft.Transport (with raft.WithClose and raft.WithPreVote)
// over the RaftTransport gRPC service. Incoming RPCs arrive through the
// grpc.Server it is registered on, which its owner shares with its own
// services; outgoing RPCs use one grpc.ClientConn per peer address, dialed
// lazily and closed by Close.
type Transport struct {
	addr     raft.ServerAddress
	timeout  time.Duration
	dialOpts []grpc.DialOption
	logger   *slog.Logger
	faults   Faults // nil in production

	consumeCh chan raft.RPC

	heartbeatMu sync.Mutex
	heartbeatFn func(raft.RPC)

	// ctx is cancelled by Close: it aborts every outgoing call in flight.
	ctx        context.Context
	cancel     context.CancelFunc
	shutdownCh chan struct{}

	mu         sync.Mutex
	closed     bool
	heartbeats sync.WaitGroup // heartbeat handlers running; Add under mu while !closed
	conns      map[raft.ServerAddress]*grpc.ClientConn
	pipelines  map[*pipeline]struct{}

	// failing holds the peers whose last call failed: why, and since
	// when (for readiness, and one log line per outage).
	failingMu sync.Mutex
	failing   map[raft.ServerAddress]PeerFailure

	clusterMu sync.RWMutex
	clusterID string
	adopt     func(string) error

	// rewriteAppend, if set, may change an incoming AppendEntries before
	// raft sees it (SetAppendEntriesRewrite).
	rewriteAppend atomic.Pointer[func(*raft.AppendEntriesRequest)]
}

var (
	_ raft.Transport   = (*Transport)(nil)
	_ raft.WithClose   = (*Transport)(nil)
	_ raft.WithPreVote = (*Transport)(nil)
)

// New builds a transport and registers its RaftTransport service on srv,
// which must not be serving yet (gRPC's rule for RegisterService).
func New(cfg Config, srv *grpc.Server) (*Transport, error) {
	if cfg.Addr == "" {
		return nil, errors.New("raft transport: empty advertised address")
	}
	if srv == nil {
		return nil, errors.New("raft transport: nil grpc.Server")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	opts = append(opts, cfg.DialOptions...)
	opts = append(opts,
		// A restarted peer must be reachable again within about a second,
		// not after gRPC's default backoff of up to two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  50 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   time.Second,
			},
			MinConnectTimeout: 2 * time.Second,
		}),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(MaxMessageSize),
			grpc.MaxCallSendMsgSize(MaxMessageSize),
		),
	)
	ctx, cancel := context.WithCancel(context.Background())
	t := &Transport{
		addr:       raft.ServerAddress(cfg.Addr),
		timeout:    cfg.Timeout,
		dialOpts:   opts,
		logger:     logger,
		faults:     cfg.Faults,
		consumeCh:  make(chan raft.RPC),
		ctx:        ctx,
		cancel:     cancel,
		shutdownCh: make(chan struct{}),
		conns:      make(map[raft.ServerAddress]*grpc.ClientConn),
		pipelines:  make(map[*pipeline]struct{}),
		failing:    make(map[raft.ServerAddress]PeerFailure),
	}
	pb.RegisterRaftTransportServer(srv, &raftService{t: t})
	return t, nil
}

// Consumer implements raft.Transport.
func (t *Transport) Consumer() <-chan raft.RPC { return t.consumeCh }

// LocalAddr implements raft.Transport.
func (t *Transport) LocalAddr() raft.ServerAddress { return t.addr }

// EncodePeer implements raft.Transport: a peer is its address.
func (t *Transport) EncodePeer(_ raft.ServerID, addr raft.ServerAddress) []byte {
	return []byte(addr)
}

// DecodePeer implements raft.Transport.
func (t *Transport) DecodePeer(b []byte) raft.ServerAddress { return raft.ServerAddress(b) }

// SetHeartbeatHandler implements raft.Transport: heartbeats skip the
// consumer queue (and the disk I/O behind it).
func (t *Transport) SetHeartbeatHandler(fn func(raft.RPC)) {
	t.heartbeatMu.Lock()
	t.heartbeatFn = fn
	t.heartbeatMu.Unlock()
}

// Close implements raft.WithClose: it aborts outgoing calls, closes every
// pipeline and connection, makes incoming RPCs fail with Unavailable and
// waits for the heartbeat handlers in progress (raft calls Close after its
// own goroutines ended; after Close returns, no raft code runs on behalf
// of this transport). The service stays registered on the gRPC server.
// Close is idempotent.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.shutdownCh)
	t.cancel()
	conns := t.conns
	t.conns = nil
	pipes := make([]*pipeline, 0, len(t.pipelines))
	for p := range t.pipelines {
		pipes = append(pipes, p)
	}
	t.mu.Unlock()

	for _, p := range pipes {
		p.Close()
	}
	t.heartbeats.Wait()
	var errs []error
	for addr, c := range conns {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft connection to %s: %w", addr, err))
		}
	}
	return errors.Join(errs...)
}

// isCut reports whether the injected faults make addr unreachable now.
func (t *Transport) isCut(addr raft.ServerAddress) bool {
	return t.faults != nil && t.faults.Cut(addr)
}

// client returns the cached RaftTransport client for target, dialing it
// (lazily: grpc.NewClient does no I/O) on first use.
func (t *Transport) client(target raft.ServerAddress) (pb.RaftTransportClient, error) {
	if t.isCut(target) {
		return nil, fmt.Errorf("raft peer %s: %w", target, errCutOff)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, raft.ErrTransportShutdown
	}
	c, ok := t.conns[target]
	if !ok {
		var err error
		c, err = grpc.NewClient(string(target), t.dialOpts...)
		if err != nil {
			return nil, fmt.Errorf("raft peer %s: %w", target, err)
		}
		t.conns[target] = c
	}
	return pb.NewRaftTransportClient(c), nil
}

// withHeader is every RaftTransport request message.
type withHeader interface{ GetHeader() *pb.RaftHeader }

// stamp puts this node's cluster id in an outgoing request's header.
func stamp[M withHeader](t *Transport, m M) M {
	if h := m.GetHeader(); h != nil {
		h.ClusterId = t.ClusterID()
	}
	return m
}

// ClusterID is the id of the raft group this transport speaks for; empty
// until it is known (a node waiting to join learns it from its leader).
func (t *Transport) ClusterID() string {
	t.clusterMu.RLock()
	defer t.clusterMu.RUnlock()
	return t.clusterID
}

// SetCluster sets the id of the raft group this transport speaks for (""
// while it is unknown: a node waiting to be added) and adopt, the function
// that persists an id the transport adopts. Outgoing requests carry the id
// in their header. An incoming request that carries another id is refused
// with FailedPrecondition, except while the id is unknown: then the first
// AppendEntries or InstallSnapshot that carries one sets it, once adopt (if
// not nil) has accepted it (an error from adopt refuses the request).
// Requests that carry no id are accepted.
func (t *Transport) SetCluster(id string, adopt func(string) error) {
	t.clusterMu.Lock()
	t.clusterID, t.adopt = id, adopt
	t.clusterMu.Unlock()
}

// SetAppendEntriesRewrite sets fn, which sees every incoming AppendEntries
// (plain, pipelined or heartbeat) after the cluster id and fault checks and
// before raft does, and may change it: its owner's workaround for a raft
// bug, say. fn runs on gRPC handler goroutines, concurrently with itself
// and with raft. nil removes it. It may be called at any time, also while
// RPCs arrive, so an fn that needs the raft.Raft can be set after
// raft.NewRaft, which takes the transport.
func (t *Transport) SetAppendEntriesRewrite(fn func(*raft.AppendEntriesRequest)) {
	if fn == nil {
		t.rewriteAppend.Store(nil)
		return
	}
	t.rewriteAppend.Store(&fn)
}

// checkCluster refuses a request from another raft group. A node that has
// no cluster id yet (it waits to be added) adopts the leader's, from the
// first AppendEntries or InstallSnapshot (mayAdopt).
func (t *Transport) checkCluster(h *pb.RaftHeader, mayAdopt bool) error {
	theirs := h.GetClusterId()
	if theirs == "" {
		return nil
	}
	t.clusterMu.Lock()
	defer t.clusterMu.Unlock()
	switch {
	case theirs == t.clusterID:
		return nil
	case t.clusterID == "" && mayAdopt:
		if t.adopt != nil {
			if err := t.adopt(theirs); err != nil {
				return status.Errorf(codes.Internal, "adopt raft cluster id %s: %v", theirs, err)
			}
		}
		t.clusterID = theirs
		t.logger.Info("joined raft cluster", "cluster_id", theirs, "from", string(h.GetAddr()))
		return nil
	case t.clusterID == "":
		return nil
	}
	return status.Errorf(codes.FailedPrecondition,
		"raft message from %s of cluster %s refused: this node (%s) belongs to cluster %s (an address that moved to another raft group?)",
		h.GetAddr(), theirs, t.addr, t.clusterID)
}

// PeerFailure is why calls to a peer fail, and since when (Unreachable).
type PeerFailure struct {
	// Err is the error of the latest call, which failed.
	Err error
	// Since is when the calls started failing: the first failure after a
	// success, or after the transport started.
	Since time.Time
}

// note records the outcome of a call to target: a peer's first failure
// after success is logged once (with why), its recovery once.
func (t *Transport) note(target raft.ServerAddress, err error) {
	select {
	case <-t.shutdownCh:
		return
	default:
	}
	t.failingMu.Lock()
	defer t.failingMu.Unlock()
	f, failing := t.failing[target]
	switch {
	case err == nil && failing:
		delete(t.failing, target)
		t.logger.Info("raft peer reachable again", "peer", target, "after", time.Since(f.Since).Round(time.Second))
	case err != nil && !failing:
		t.failing[target] = PeerFailure{Err: err, Since: time.Now()}
		t.logger.Warn("raft peer unreachable", "peer", target, "err", err)
	case err != nil:
		f.Err = err
		t.failing[target] = f
	}
}

// Unreachable returns the peers whose latest AppendEntries, RequestVote,
// RequestPreVote or TimeoutNow call failed (on the network or at the
// peer), with why and since when: a copy the caller owns. A peer leaves it
// at its next successful call. Snapshots and pipelines are not tracked,
// nor are calls that Config.Faults cut off, nor calls after Close.
func (t *Transport) Unreachable() map[raft.ServerAddress]PeerFailure {
	t.failingMu.Lock()
	defer t.failingMu.Unlock()
	return maps.Clone(t.failing)
}

// errCutOff is what a peer cut off by Faults looks like to raft.
var errCutOff = errors.New("cut off from peer (test partition)")

// outErr names the call and peer of a failed outgoing RPC; a transport
// shut down mid-call reports raft.ErrTransportShutdown.
func (t *Transport) outErr(method string, target raft.ServerAddress, err error) error {
	select {
	case <-t.shutdownCh:
		return raft.ErrTransportShutdown
	default:
	}
	return fmt.Errorf("raft %s to %s: %w", method, target, err)
}

func (t *Transport) callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.ctx, t.timeout)
}

// AppendEntries implements raft.Transport.
func (t *Transport) AppendEntries(_ raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	c, err := t.client(target)
	if err != nil {
		return err
	}
	ctx, cancel := t.callCtx()
	defer cancel()
	out, err := c.AppendEntries(ctx, stamp(t, appendEntriesRequestToProto(args)))
	t.note(target, err)
	if err != nil {
		return t.outErr("AppendEntries", target, err)
	}
	*resp = appendEntriesResponseFromProto(out)
	return nil
}

// RequestVote implements raft.Transport.
func (t *Transport) RequestVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	c, err := t.client(target)
	if err != nil {
		return err
	}
	ctx, cancel := t.callCtx()
	defer cancel()
	out, err := c.RequestVote(ctx, stamp(t, requestVoteRequestToProto(args)))
	t.note(target, err)
	if err != nil {
		return t.outErr("RequestVote", target, err)
	}
	*resp = requestVoteResponseFromProto(out)
	return nil
}

// RequestPreVote implements raft.WithPreVote.
func (t *Transport) RequestPreVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	c, err := t.client(target)
	if err != nil {
		return err
	}
	ctx, cancel := t.callCtx()
	defer cancel()
	out, err := c.RequestPreVote(ctx, stamp(t, requestPreVoteRequestToProto(args)))
	t.note(target, err)
	if err != nil {
		return t.outErr("RequestPreVote", target, err)
	}
	*resp = requestPreVoteResponseFromProto(out)
	return nil
}

// TimeoutNow implements raft.Transport.
func (t *Transport) TimeoutNow(_ raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	c, err := t.client(target)
	if err != nil {
		return err
	}
	ctx, cancel := t.callCtx()
	defer cancel()
	out, err := c.TimeoutNow(ctx, stamp(t, &pb.RaftTimeoutNowRequest{Header: headerToProto(args.RPCHeader)}))
	t.note(target, err)
	if err != nil {
		return t.outErr("TimeoutNow", target, err)
	}
	*resp = raft.TimeoutNowResponse{RPCHeader: headerFromProto(out.GetHeader())}
	return nil
}

// InstallSnapshot implements raft.Transport: the request, then the data in
// chunks, on one client stream. The deadline grows with the snapshot size.
func (t *Transport) InstallSnapshot(_ raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	c, err := t.client(target)
	if err != nil {
		return err
	}
	timeout := t.timeout
	if scaled := t.timeout * time.Duration(args.Size/snapshotTimeoutScale); scaled > timeout {
		timeout = scaled
	}
	ctx, cancel := context.WithTimeout(t.ctx, timeout)
	defer cancel()
	stream, err := c.InstallSnapshot(ctx)
	if err != nil {
		return t.outErr("InstallSnapshot", target, err)
	}
	// Send reports io.EOF when the receiver has ended the stream early; its
	// status then comes from CloseAndRecv.
	sendErr := stream.Send(&pb.RaftInstallSnapshotChunk{Request: stamp(t, installSnapshotRequestToProto(args))})
	for sendErr == nil {
		// A fresh buffer per chunk: gRPC may hold on to a sent message.
		buf := make([]byte, snapshotChunkSize)
		n, rerr := io.ReadFull(data, buf)
		if n > 0 {
			sendErr = stream.Send(&pb.RaftInstallSnapshotChunk{Data: buf[:n]})
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("raft InstallSnapshot to %s: read snapshot: %w", target, rerr)
		}
	}
	if sendErr != nil && !errors.Is(sendErr, io.EOF) {
		return t.outErr("InstallSnapshot", target, sendErr)
	}
	out, err := stream.CloseAndRecv()
	if err != nil {
		return t.outErr("InstallSnapshot", target, err)
	}
	*resp = raft.InstallSnapshotResponse{
		RPCHeader: headerFromProto(out.GetHeader()),
		Term:      out.GetTerm(),
		Success:   out.GetSuccess(),
	}
	return nil
}

// AppendEntriesPipeline implements raft.Transport with a bidirectional
// stream: requests go out as raft sends them, responses come back in order.
func (t *Transport) AppendEntriesPipeline(_ raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	c, err := t.client(target)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(t.ctx)
	stream, err := c.AppendEntriesPipeline(ctx)
	if err != nil {
		cancel()
		return nil, t.outErr("AppendEntriesPipeline", target, err)
	}
	p := &pipeline{
		t:          t,
		target:     target,
		stream:     stream,
		cancel:     cancel,
		inflight:   make(chan *appendFuture, pipelineMaxInFlight),
		done:       make(chan raft.AppendFuture, pipelineMaxInFlight),
		shutdownCh: make(chan struct{}),
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		cancel()
		return nil, raft.ErrTransportShutdown
	}
	t.pipelines[p] = struct{}{}
	t.mu.Unlock()
	p.wg.Add(1)
	go p.receive()
	return p, nil
}

// pipeline is a raft.AppendPipeline on one AppendEntriesPipeline stream.
type pipeline struct {
	t      *Transport
	target raft.ServerAddress
	stream grpc.BidiStreamingClient[pb.RaftAppendEntriesRequest, pb.RaftAppendEntriesResponse]
	cancel context.CancelFunc

	inflight   chan *appendFuture
	done       chan raft.AppendFuture
	shutdownCh chan struct{}
	closeOnce  sync.Once
	wg         sync.WaitGroup
}

// AppendEntries implements raft.AppendPipeline. raft calls it from a single
// goroutine; a full in-flight queue blocks it (back-pressure).
func (p *pipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	if p.t.isCut(p.target) {
		return nil, fmt.Errorf("raft peer %s: %w", p.target, errCutOff)
	}
	f := &appendFuture{start: time.Now(), req: args, resp: resp, done: make(chan struct{})}
	if err := p.stream.Send(stamp(p.t, appendEntriesRequestToProto(args))); err != nil {
		return nil, p.t.outErr("AppendEntriesPipeline", p.target, err)
	}
	select {
	case p.inflight <- f:
		return f, nil
	case <-p.shutdownCh:
		return nil, raft.ErrPipelineShutdown
	}
}

// receive matches responses to requests in order. A response that does not
// come within the transport timeout aborts the stream, which fails every
// request in flight: raft then falls back to plain AppendEntries.
func (p *pipeline) receive() {
	defer p.wg.Done()
	for {
		var f *appendFuture
		select {
		case f = <-p.inflight:
		case <-p.shutdownCh:
			return
		}
		timer := time.AfterFunc(p.t.timeout, p.cancel)
		out, err := p.stream.Recv()
		timer.Stop()
		if err != nil {
			f.err = p.t.outErr("AppendEntriesPipeline", p.target, err)
		} else {
			*f.resp = appendEntriesResponseFromProto(out)
		}
		close(f.done)
		select {
		case p.done <- f:
		case <-p.shutdownCh:
			return
		}
	}
}

// Consumer implements raft.AppendPipeline.
func (p *pipeline) Consumer() <-chan raft.AppendFuture { return p.done }

// Close implements raft.AppendPipeline: it cancels the stream and waits for
// the receiving goroutine. Idempotent.
func (p *pipeline) Close() error {
	p.closeOnce.Do(func() {
		close(p.shutdownCh)
		p.cancel()
		p.wg.Wait()
		p.t.mu.Lock()
		delete(p.t.pipelines, p)
		p.t.mu.Unlock()
	})
	return nil
}

// appendFuture is a raft.AppendFuture of a pipeline.
type appendFuture struct {
	start time.Time
	req   *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	err   error
	done  chan struct{}
}

func (f *appendFuture) Error() error                          { <-f.done; return f.err }
func (f *appendFuture) Start() time.Time                      { return f.start }
func (f *appendFuture) Request() *raft.AppendEntriesRequest   { return f.req }
func (f *appendFuture) Response() *raft.AppendEntriesResponse { return f.resp }

// ---------------------------------------------------------------------------
// Incoming: the RaftTransport gRPC service hands each RPC to raft through
// the consumer channel and waits for raft's answer, giving up when the
// caller goes away or the transport shuts down.

type raftService struct {
	pb.UnimplementedRaftTransportServer
	t *Transport
}

// dispatch hands one command to raft and returns raft's response.
func (t *Transport) dispatch(ctx context.Context, cmd any, data io.Reader) (any, error) {
	respCh := make(chan raft.RPCResponse, 1) // raft never blocks on it
	rpc := raft.RPC{Command: cmd, Reader: data, RespChan: respCh}
	queued := false
	if ae, ok := cmd.(*raft.AppendEntriesRequest); ok && isHeartbeat(ae) {
		var err error
		if queued, err = t.heartbeat(rpc); err != nil {
			return nil, err
		}
	}
	if !queued {
		select {
		case t.consumeCh <- rpc:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-t.shutdownCh:
			return nil, errShutdownStatus
		}
	}
	select {
	case r := <-respCh:
		if r.Error != nil {
			return nil, status.Error(codes.FailedPrecondition, r.Error.Error())
		}
		return r.Response, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-t.shutdownCh:
		return nil, errShutdownStatus
	}
}

// heartbeat runs raft's heartbeat handler, if it set one, on this
// goroutine. raft's code then runs outside raft's own goroutines, so Close
// waits for these calls: raft's stores must outlive them.
func (t *Transport) heartbeat(rpc raft.RPC) (handled bool, err error) {
	t.heartbeatMu.Lock()
	fn := t.heartbeatFn
	t.heartbeatMu.Unlock()
	if fn == nil {
		return false, nil
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return false, errShutdownStatus
	}
	t.heartbeats.Add(1)
	t.mu.Unlock()
	defer t.heartbeats.Done()
	fn(rpc)
	return true, nil
}

var errShutdownStatus = status.Error(codes.Unavailable, "raft transport shut down")

// isHeartbeat is raft's own test (see NetworkTransport): a term and a
// leader, nothing else.
func isHeartbeat(r *raft.AppendEntriesRequest) bool {
	leader := r.Addr
	if len(leader) == 0 {
		leader = r.Leader
	}
	return r.Term != 0 && len(leader) != 0 && r.PrevLogEntry == 0 && r.PrevLogTerm == 0 &&
		len(r.Entries) == 0 && r.LeaderCommitIndex == 0
}

// refuse refuses a request from a sender the injected faults cut off.
func (t *Transport) refuse(h raft.RPCHeader) error {
	if t.isCut(raft.ServerAddress(h.Addr)) {
		return status.Errorf(codes.Unavailable, "raft peer %s: %v", h.Addr, errCutOff)
	}
	return nil
}

func (s *raftService) AppendEntries(ctx context.Context, in *pb.RaftAppendEntriesRequest) (*pb.RaftAppendEntriesResponse, error) {
	if err := s.t.checkCluster(in.GetHeader(), true); err != nil {
		return nil, err
	}
	req, err := appendEntriesRequestFromProto(in)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.t.refuse(req.RPCHeader); err != nil {
		return nil, err
	}
	if rewrite := s.t.rewriteAppend.Load(); rewrite != nil {
		(*rewrite)(req)
	}
	r, err := s.t.dispatch(ctx, req, nil)
	if err != nil {
		return nil, err
	}
	resp, ok := r.(*raft.AppendEntriesResponse)
	if !ok {
		return nil, status.Errorf(codes.Internal, "raft answered AppendEntries with %T", r)
	}
	if s.t.faults != nil && s.t.faults.LoseReply(req) {
		return nil, status.Error(codes.Unavailable, "reply lost (test)")
	}
	return appendEntriesResponseToProto(resp), nil
}

func (s *raftService) AppendEntriesPipeline(stream grpc.BidiStreamingServer[pb.RaftAppendEntriesRequest, pb.RaftAppendEntriesResponse]) error {
	ctx := stream.Context()
	for {
		in, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		out, err := s.AppendEntries(ctx, in)
		if err != nil {
			return err
		}
		if err := stream.Send(out); err != nil {
			return err
		}
	}
}

func (s *raftService) RequestVote(ctx context.Context, in *pb.RaftRequestVoteRequest) (*pb.RaftRequestVoteResponse, error) {
	if err := s.t.checkCluster(in.GetHeader(), false); err != nil {
		return nil, err
	}
	req := requestVoteRequestFromProto(in)
	if err := s.t.refuse(req.RPCHeader); err != nil {
		return nil, err
	}
	r, err := s.t.dispatch(ctx, req, nil)
	if err != nil {
		return nil, err
	}
	resp, ok := r.(*raft.RequestVoteResponse)
	if !ok {
		return nil, status.Errorf(codes.Internal, "raft answered RequestVote with %T", r)
	}
	return requestVoteResponseToProto(resp), nil
}

func (s *raftService) RequestPreVote(ctx context.Context, in *pb.RaftRequestPreVoteRequest) (*pb.RaftRequestPreVoteResponse, error) {
	if err := s.t.checkCluster(in.GetHeader(), false); err != nil {
		return nil, err
	}
	req := requestPreVoteRequestFromProto(in)
	if err := s.t.refuse(req.RPCHeader); err != nil {
		return nil, err
	}
	r, err := s.t.dispatch(ctx, req, nil)
	if err != nil {
		return nil, err
	}
	resp, ok := r.(*raft.RequestPreVoteResponse)
	if !ok {
		return nil, status.Errorf(codes.Internal, "raft answered RequestPreVote with %T", r)
	}
	return requestPreVoteResponseToProto(resp), nil
}

func (s *raftService) TimeoutNow(ctx context.Context, in *pb.RaftTimeoutNowRequest) (*pb.RaftTimeoutNowResponse, error) {
	if err := s.t.checkCluster(in.GetHeader(), false); err != nil {
		return nil, err
	}
	req := &raft.TimeoutNowRequest{RPCHeader: headerFromProto(in.GetHeader())}
	if err := s.t.refuse(req.RPCHeader); err != nil {
		return nil, err
	}
	r, err := s.t.dispatch(ctx, req, nil)
	if err != nil {
		return nil, err
	}
	resp, ok := r.(*raft.TimeoutNowResponse)
	if !ok {
		return nil, status.Errorf(codes.Internal, "raft answered TimeoutNow with %T", r)
	}
	return &pb.RaftTimeoutNowResponse{Header: headerToProto(resp.RPCHeader)}, nil
}

// InstallSnapshot feeds the stream's chunks to raft through a pipe. Only
// this goroutine touches the stream; the pipe is closed under raft when the
// caller goes away or the transport shuts down, so nothing waits forever.
func (s *raftService) InstallSnapshot(stream grpc.ClientStreamingServer[pb.RaftInstallSnapshotChunk, pb.RaftInstallSnapshotResponse]) error {
	t := s.t
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if first.GetRequest() == nil {
		return status.Error(codes.InvalidArgument, "InstallSnapshot: the first message carries no request")
	}
	if err := t.checkCluster(first.GetRequest().GetHeader(), true); err != nil {
		return err
	}
	req := installSnapshotRequestFromProto(first.GetRequest())
	if err := t.refuse(req.RPCHeader); err != nil {
		return err
	}

	pr, pw := io.Pipe()
	respCh := make(chan raft.RPCResponse, 1)
	select {
	case t.consumeCh <- raft.RPC{Command: req, Reader: pr, RespChan: respCh}:
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-t.shutdownCh:
		return errShutdownStatus
	}

	stop := make(chan struct{})
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		select {
		case <-ctx.Done():
			pr.CloseWithError(ctx.Err())
		case <-t.shutdownCh:
			pr.CloseWithError(raft.ErrTransportShutdown)
		case <-stop:
		}
	}()
	defer func() { close(stop); watch.Wait() }()

	if len(first.GetData()) > 0 {
		if _, err := pw.Write(first.GetData()); err != nil {
			pw.CloseWithError(err)
		}
	}
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			pw.Close()
			break
		}
		if err != nil {
			pw.CloseWithError(err)
			break
		}
		if _, err := pw.Write(chunk.GetData()); err != nil {
			// raft stopped reading (it answers below), or the pipe was
			// closed under it.
			break
		}
	}

	select {
	case r := <-respCh:
		if r.Error != nil {
			return status.Error(codes.FailedPrecondition, r.Error.Error())
		}
		resp, ok := r.Response.(*raft.InstallSnapshotResponse)
		if !ok {
			return status.Errorf(codes.Internal, "raft answered InstallSnapshot with %T", r.Response)
		}
		return stream.SendAndClose(&pb.RaftInstallSnapshotResponse{
			Header:  headerToProto(resp.RPCHeader),
			Term:    resp.Term,
			Success: resp.Success,
		})
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-t.shutdownCh:
		return errShutdownStatus
	}
}
