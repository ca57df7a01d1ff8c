package allreduce

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/peer"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// Ring is one generation of the ring: the members' addresses in ring order.
type Ring struct {
	JobID      string
	Generation uint64
	Rank       int      // my index in Addrs
	Addrs      []string // host:port of every member's gRPC server, ring order
	// SendKey signs this member's hello to its successor, and RecvKey
	// checks its predecessor's (HelloMAC): with RecvKey set, a stream
	// whose hello is not signed with it is refused. AcceptKey signs this
	// member's answer to its predecessor's hello, and NextAcceptKey
	// checks its successor's (AcceptMAC): with NextAcceptKey set, the
	// sender sends no gradient until the successor has answered with it.
	// Any may be nil (a ring without keys), unless Config.RequireKeys.
	SendKey, RecvKey         []byte
	AcceptKey, NextAcceptKey []byte
}

// HelloMAC is the signature of the hello that rank sender sends rank
// receiver in a job's generation: HMAC-SHA256 under the sender's key, over
// binding, the connection's exported keying material (ChannelBinding; nil
// without TLS), so that the hello is good on the one connection it was
// sent on and a relay cannot pass it on.
func HelloMAC(key []byte, job string, generation uint64, sender, receiver int, binding []byte) []byte {
	return ringMAC("gencluster ring hello\x00", key, job, generation, sender, receiver, binding)
}

// AcceptMAC is the signature of the receiver's answer to that hello, under
// the receiver's accept key, over the same binding.
func AcceptMAC(key []byte, job string, generation uint64, sender, receiver int, binding []byte) []byte {
	return ringMAC("gencluster ring accept\x00", key, job, generation, sender, receiver, binding)
}

func ringMAC(label string, key []byte, job string, generation uint64, sender, receiver int, binding []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	m.Write([]byte(job))
	m.Write([]byte{0})
	var b [32]byte
	binary.BigEndian.PutUint64(b[0:], generation)
	binary.BigEndian.PutUint64(b[8:], uint64(sender))
	binary.BigEndian.PutUint64(b[16:], uint64(receiver))
	binary.BigEndian.PutUint64(b[24:], uint64(len(binding)))
	m.Write(b[:])
	m.Write(binding)
	return m.Sum(nil)
}

// bindingLabel is the exporter label of ChannelBinding (RFC 5705 / RFC
// 9266 style: "EXPORTER-" and what it is for).
const bindingLabel = "EXPORTER-gencluster-ring-hello"

// ChannelBinding returns 32 bytes of keying material exported from the TLS
// connection of a gRPC stream's context (client or server side): the same
// on both ends of one connection, different on any other. It returns nil
// if the stream is not over TLS.
func ChannelBinding(ctx context.Context) ([]byte, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, nil
	}
	var state *tls.ConnectionState
	switch ai := p.AuthInfo.(type) {
	case credentials.TLSInfo:
		state = &ai.State
	case *credentials.TLSInfo:
		if ai != nil {
			state = &ai.State
		}
	}
	if state == nil {
		return nil, nil
	}
	b, err := state.ExportKeyingMaterial(bindingLabel, nil, 32)
	if err != nil {
		return nil, fmt.Errorf("allreduce: export TLS keying material: %w", err)
	}
	return b, nil
}

// acceptHeader is the response header carrying the receiver's AcceptMAC.
const acceptHeader = "gencluster-ring-accept"

// Config configures a Member.
type Config struct {
	Timeout     time.Duration     // a peer silent this long fails the operation (default 10s); must exceed the skew between ranks' calls
	ChunkBytes  int               // pipeline chunk size (default DefaultChunkBytes)
	Logger      *slog.Logger      // nil: discard
	DialOptions []grpc.DialOption // nil: insecure
	// RequireKeys makes SetRing refuse a ring of more than one member
	// without RecvKey, SendKey, AcceptKey and NextAcceptKey, so that no
	// stream is ever admitted or fed unauthenticated.
	RequireKeys bool
}

const (
	// DefaultTimeout is Config.Timeout's default.
	DefaultTimeout = 10 * time.Second
	// DefaultChunkBytes is Config.ChunkBytes's default.
	DefaultChunkBytes = 256 << 10
	// MaxChunkBytes bounds Config.ChunkBytes (and so every message).
	MaxChunkBytes = 32 << 20

	windowSize     = 8 << 20  // per-stream flow-control window
	connWindowSize = 16 << 20 // per-connection flow-control window
	ioBufferSize   = 256 << 10
	maxMsgSize     = MaxChunkBytes + 1<<20
	framePoolSize  = 8  // received frames in flight per generation
	maxStreams     = 64 // concurrent streams per connection to a member's server
)

// ServerOptions returns the options the worker's grpc.Server must be created
// with for the ring to run fast: large flow-control windows and message
// limits. They apply to every service on that server.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.InitialWindowSize(windowSize),
		grpc.InitialConnWindowSize(connWindowSize),
		grpc.MaxRecvMsgSize(maxMsgSize),
		grpc.MaxSendMsgSize(maxMsgSize),
		// A ring needs one stream per connection (two while generations
		// overlap); the bound stops a peer from opening streams without end.
		grpc.MaxConcurrentStreams(maxStreams),
		grpc.ReadBufferSize(ioBufferSize),
		grpc.WriteBufferSize(ioBufferSize),
		experimental.BufferPool(bufferPool),
	}
}

func dialOptions(user []grpc.DialOption) []grpc.DialOption {
	opts := []grpc.DialOption{
		grpc.WithInitialWindowSize(windowSize),
		grpc.WithInitialConnWindowSize(connWindowSize),
		grpc.WithReadBufferSize(ioBufferSize),
		grpc.WithWriteBufferSize(ioBufferSize),
		experimental.WithBufferPool(bufferPool),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize)),
	}
	if user == nil {
		return append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	return append(opts, user...)
}

// Member is this process's place in the ring. Its methods are safe for
// concurrent use.
type Member struct {
	cfg     Config
	log     *slog.Logger
	dial    []grpc.DialOption
	refused atomic.Uint64
	wg      sync.WaitGroup // worker and sender goroutines
	ops     sync.Pool      // *Op for AllReduce

	aborted atomic.Bool // Abort: streams are cut, not closed

	mu      sync.Mutex
	closed  bool
	st      *ringState                  // current generation; nil before SetRing
	changed chan struct{}               // closed and replaced by every SetRing and Close
	conns   map[string]*grpc.ClientConn // kept across generations

	// testSendHook, if set, runs before every data frame the sender sends.
	testSendHook func(seq uint64, step int)
}

// NewMember registers the ring service on srv (call before srv.Serve).
func NewMember(cfg Config, srv *grpc.Server) (*Member, error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("allreduce: negative timeout %v", cfg.Timeout)
	}
	if cfg.ChunkBytes == 0 {
		cfg.ChunkBytes = DefaultChunkBytes
	}
	if cfg.ChunkBytes < 4 || cfg.ChunkBytes > MaxChunkBytes {
		return nil, fmt.Errorf("allreduce: chunk size %d bytes outside [4, %d]", cfg.ChunkBytes, MaxChunkBytes)
	}
	if srv == nil {
		return nil, fmt.Errorf("allreduce: nil grpc server")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Member{
		cfg:     cfg,
		log:     log.With("component", "allreduce"),
		dial:    dialOptions(cfg.DialOptions),
		changed: make(chan struct{}),
		conns:   map[string]*grpc.ClientConn{},
	}
	m.ops.New = func() any { return &Op{done: make(chan error, 1)} }
	pb.RegisterAllReduceRingServer(srv, &service{m: m})
	return m, nil
}

// Refused returns how many streams or frames of another job or generation
// (or from the wrong peer) this member has refused.
func (m *Member) Refused() uint64 { return m.refused.Load() }

// Generation is one generation of the ring on this member, as SetRing made
// it. Operations are started on a Generation, never on whatever ring is
// current: once SetRing has replaced it, its operations fail with
// ErrSuperseded and send nothing, so a step that began in one generation
// can never run a bucket on the next generation's ring.
type Generation struct {
	st *ringState
}

// Ring returns the ring of this generation.
func (g *Generation) Ring() Ring {
	r := g.st.ring
	r.Addrs = append([]string(nil), r.Addrs...)
	return r
}

// Err returns nil while the generation is current and healthy, else the
// error that ended it (wrapping ErrSuperseded, ErrClosed or a peer's
// failure).
func (g *Generation) Err() error {
	g.st.mu.Lock()
	defer g.st.mu.Unlock()
	if g.st.err == nil {
		return nil
	}
	return &generationError{job: g.st.ring.JobID, generation: g.st.ring.Generation, err: g.st.err}
}

// SetRing switches to a new ring (new generation) and returns it; the old
// generation ends: its queued and in-flight operations fail with
// ErrSuperseded, as does any operation started on it later. The
// generation must grow.
func (m *Member) SetRing(r Ring) (*Generation, error) {
	n := len(r.Addrs)
	if n == 0 {
		return nil, fmt.Errorf("allreduce: ring of job %q generation %d has no members", r.JobID, r.Generation)
	}
	if r.Rank < 0 || r.Rank >= n {
		return nil, fmt.Errorf("allreduce: rank %d outside ring of %d members", r.Rank, n)
	}
	if m.cfg.RequireKeys && n > 1 && (len(r.SendKey) == 0 || len(r.RecvKey) == 0 || len(r.AcceptKey) == 0 || len(r.NextAcceptKey) == 0) {
		return nil, fmt.Errorf("allreduce: ring of job %q generation %d lacks ring keys, which this member requires (do all ring members hold a secret?)", r.JobID, r.Generation)
	}
	r.Addrs = append([]string(nil), r.Addrs...)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	old := m.st
	if old != nil && old.ring.JobID == r.JobID && r.Generation <= old.ring.Generation {
		m.mu.Unlock()
		return nil, fmt.Errorf("allreduce: job %q generation %d is not newer than current generation %d", r.JobID, r.Generation, old.ring.Generation)
	}
	var next *grpc.ClientConn
	if n > 1 {
		addr := r.Addrs[(r.Rank+1)%n]
		next = m.conns[addr]
		if next == nil {
			c, err := grpc.NewClient(addr, m.dial...)
			if err != nil {
				m.mu.Unlock()
				return nil, fmt.Errorf("allreduce: dial successor %s: %w", addr, err)
			}
			m.conns[addr] = c
			next = c
		}
	}
	st := newRingState(m, r, next)
	m.st = st
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
	if old != nil {
		old.fail(ErrSuperseded)
	}
	st.start()
	m.log.Info("ring set", "job", r.JobID, "generation", r.Generation, "rank", r.Rank, "size", n)
	return &Generation{st: st}, nil
}

// Op is one started all-reduce.
type Op struct {
	ctx  context.Context
	buf  []float32
	seq  uint64
	done chan error // receives the result once

	waited bool
	err    error
}

// Wait returns when the operation's buffer is reduced on this member (and
// so every member completed it) or the operation failed. It may be called
// more than once from one goroutine.
func (op *Op) Wait() error {
	if !op.waited {
		op.err = <-op.done
		op.waited = true
	}
	return op.err
}

// Start begins reducing one bucket in this generation and returns at once;
// buckets must be started in the same order on every rank. buf must not be
// touched until Wait returns. Cancelling ctx fails the operation and, since
// the ring can no longer stay in step, the whole generation.
func (g *Generation) Start(ctx context.Context, buf []float32) *Op {
	return g.StartOp(ctx, nil, buf)
}

// StartOp is Start reusing op, an Op whose Wait has returned (nil: a new
// one), so that a training loop starts its buckets step after step without
// allocating.
func (g *Generation) StartOp(ctx context.Context, op *Op, buf []float32) *Op {
	if op == nil {
		op = &Op{done: make(chan error, 1)}
	}
	op.ctx, op.buf, op.waited, op.err = ctx, buf, false, nil
	g.st.enqueue(op)
	return op
}

// AllReduce sums buf in place across the ring of this generation; every
// rank calls it with the same length.
func (g *Generation) AllReduce(ctx context.Context, buf []float32) error {
	m := g.st.m
	op := m.ops.Get().(*Op)
	op.ctx, op.buf, op.waited, op.err = ctx, buf, false, nil
	g.st.enqueue(op)
	err := <-op.done
	op.ctx, op.buf = nil, nil
	m.ops.Put(op)
	return err
}

// Abort is Close without the goodbyes, as if the process died: every
// stream is cut at once (peers see a broken stream, not a clean end).
func (m *Member) Abort() error {
	m.aborted.Store(true)
	return m.Close()
}

// Close fails every queued or running operation, stops this member's
// goroutines and closes its connections. It lets the successor read the
// frames already sent first (waiting at most Timeout), so a rank may Close
// right after its last operation. The grpc.Server stays the caller's to stop.
func (m *Member) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	st := m.st
	m.st = nil
	close(m.changed)
	conns := m.conns
	m.conns = nil
	m.mu.Unlock()
	if st != nil {
		st.fail(ErrClosed)
	}
	m.wg.Wait()
	var first error
	for addr, c := range conns {
		if err := c.Close(); err != nil && first == nil {
			first = fmt.Errorf("allreduce: close connection to %s: %w", addr, err)
		}
	}
	return first
}
