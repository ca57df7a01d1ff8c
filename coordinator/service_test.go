package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/ckptstore"
)

// svcMember is one coordinator of a test group: gRPC server, node, service.
type svcMember struct {
	id, addr string
	srv      *grpc.Server
	node     *Node
	svc      *Service
	client   pb.CoordinatorClient
	conn     *grpc.ClientConn
}

func (m *svcMember) stop() {
	m.conn.Close()
	m.svc.Close()
	m.srv.Stop()
	m.node.Close(context.Background())
}

// startServiceGroup starts n coordinators on loopback with short timeouts.
func startServiceGroup(t testing.TB, n int, lease time.Duration) []*svcMember {
	t.Helper()
	return startServiceGroupWith(t, n, ServiceConfig{Lease: lease})
}

// startServiceGroupWith is startServiceGroup with the services configured
// as cfg (Node and FSM are filled in).
func startServiceGroupWith(t testing.TB, n int, cfg ServiceConfig) []*svcMember {
	t.Helper()
	return startServiceGroupStores(t, n, cfg, nil)
}

// startServiceGroupStores is startServiceGroupWith where coordinator i
// keeps checkpoints in stores[i] (if stores is not nil).
func startServiceGroupStores(t testing.TB, n int, cfg ServiceConfig, stores []*ckptstore.Store) []*svcMember {
	t.Helper()
	// Registered first, so it runs last: after the group is stopped, no
	// goroutine of it may remain.
	t.Cleanup(checkGoroutines(t))
	var lis []net.Listener
	var peers []Peer
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis = append(lis, l)
		peers = append(peers, Peer{ID: fmt.Sprintf("c%d", i+1), Addr: l.Addr().String()})
	}
	var ms []*svcMember
	for i := 0; i < n; i++ {
		srv := grpc.NewServer()
		fsm := NewFSM(nil)
		node, err := NewNode(context.Background(), NodeConfig{
			ID: peers[i].ID, Addr: peers[i].Addr, DataDir: t.TempDir(), Peers: peers, FSM: fsm,
			HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
			LeaderLeaseTimeout: 200 * time.Millisecond, CommitTimeout: 10 * time.Millisecond,
		}, srv)
		if err != nil {
			t.Fatal(err)
		}
		sc := cfg
		sc.Node, sc.FSM = node, fsm
		if stores != nil {
			sc.Checkpoints = stores[i]
		}
		svc := NewService(sc)
		pb.RegisterCoordinatorServer(srv, svc)
		go srv.Serve(lis[i])
		conn, err := grpc.NewClient(peers[i].Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, &svcMember{id: peers[i].ID, addr: peers[i].Addr, srv: srv, node: node, svc: svc, client: pb.NewCoordinatorClient(conn), conn: conn})
	}
	t.Cleanup(func() {
		for _, m := range ms {
			if m != nil {
				m.stop()
			}
		}
	})
	return ms
}

// yet turns a condition into eventually's error form.
func yet(ok bool) error {
	if ok {
		return nil
	}
	return errors.New("not yet")
}

func leaderOf(t testing.TB, ms []*svcMember) *svcMember {
	t.Helper()
	var l *svcMember
	eventually(t, 5*time.Second, "a leader", func() error {
		for _, m := range ms {
			if m != nil && m.node.IsLeader() {
				l = m
				return nil
			}
		}
		return errors.New("no leader")
	})
	// Followers learn the leader from its first heartbeat: wait for that, so
	// that the test's first forwarded write finds it.
	eventually(t, 5*time.Second, "every coordinator knows the leader", func() error {
		for _, m := range ms {
			if m == nil {
				continue
			}
			if _, addr := m.node.Leader(); addr != l.addr {
				return fmt.Errorf("%s sees leader %q", m.id, addr)
			}
		}
		return nil
	})
	return l
}

// join registers a worker through m, retrying while leadership moves
// (Unavailable; a join is idempotent); any other error fails the test.
func join(t testing.TB, ctx context.Context, m *svcMember, id, addr string) *pb.JoinResponse {
	t.Helper()
	var r *pb.JoinResponse
	eventually(t, 5*time.Second, "join "+id+" through "+m.id, func() error {
		var err error
		r, err = m.client.Join(ctx, &pb.JoinRequest{WorkerId: id, Addr: addr})
		if err != nil && status.Code(err) != codes.Unavailable {
			t.Fatalf("join %s through %s: %v", id, m.id, err)
		}
		return err
	})
	return r
}

func followerOf(ms []*svcMember, leader *svcMember) *svcMember {
	for _, m := range ms {
		if m != nil && m != leader {
			return m
		}
	}
	return nil
}

func TestServiceThroughFollower(t *testing.T) {
	ms := startServiceGroup(t, 3, 2*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f := followerOf(ms, leaderOf(t, ms))

	j := join(t, ctx, f, "w1", "127.0.0.1:9001")
	if len(j.GetCoordinators()) != 3 || j.GetLeaseMs() != 2000 || j.GetAssignment().GetGeneration() == 0 {
		t.Fatalf("join response %v", j)
	}
	if j.GetSecret() == "" {
		t.Fatal("the first join issued no secret")
	}
	if _, err := f.client.Join(ctx, &pb.JoinRequest{WorkerId: "w1", Addr: "127.0.0.1:9002"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("claiming w1's id from another address without its secret: %v", err)
	}
	if _, err := f.client.Join(ctx, &pb.JoinRequest{WorkerId: "w1", Addr: "127.0.0.1:9002", Secret: "guess"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("claiming w1's id from another address with a wrong secret: %v", err)
	}
	// With the secret, the worker restarted elsewhere takes over at once.
	moved, err := f.client.Join(ctx, &pb.JoinRequest{WorkerId: "w1", Addr: "127.0.0.1:9003", Secret: j.GetSecret()})
	if err != nil || moved.GetSecret() != "" || moved.GetAssignment().GetGeneration() != j.GetAssignment().GetGeneration()+1 ||
		moved.GetAssignment().GetRing()[0].GetAddr() != "127.0.0.1:9003" {
		t.Fatalf("take-over with the secret: %v, %v", moved, err)
	}
	if _, err := f.client.Join(ctx, &pb.JoinRequest{WorkerId: "w1", Addr: "127.0.0.1:9001", Secret: j.GetSecret()}); err != nil {
		t.Fatalf("moving back: %v", err)
	}
	if _, err := f.client.Join(ctx, &pb.JoinRequest{WorkerId: "", Addr: "127.0.0.1:9002"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty worker id: %v", err)
	}
	sub, err := f.client.Submit(ctx, &pb.SubmitRequest{Job: &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 64, Steps: 10, Lr: 1e-3, Seed: 1, MinWorkers: 1}})
	if err != nil || sub.GetJobId() == "" {
		t.Fatalf("submit: %v %v", sub, err)
	}
	if _, err := f.client.Submit(ctx, &pb.SubmitRequest{Job: &pb.JobSpec{Model: "gan", Dataset: "mnist", Batch: 64, Steps: 10, Lr: 1e-3, MinWorkers: 1}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("impossible submit: %v", err)
	}
	hb, err := f.client.Heartbeat(ctx, &pb.HeartbeatRequest{WorkerId: "w1", Addr: "127.0.0.1:9001"})
	if err != nil || hb.GetAssignment().GetJobId() != sub.GetJobId() {
		t.Fatalf("heartbeat: %v %v", hb, err)
	}
	if _, err := f.client.Heartbeat(ctx, &pb.HeartbeatRequest{WorkerId: "nobody"}); status.Code(err) != codes.NotFound {
		t.Fatalf("heartbeat of an unknown worker: %v", err)
	}
	// Every replica shows the committed state.
	for _, m := range ms {
		eventually(t, 5*time.Second, "replica "+m.id+" sees the worker and job", func() error {
			st, err := m.client.Status(ctx, &pb.StatusRequest{})
			return yet(err == nil && len(st.GetWorkers()) == 1 && len(st.GetJobs()) == 1 && st.GetLeader() != "")
		})
	}
}

func TestServiceLeaseExpiryAndFailureReport(t *testing.T) {
	ms := startServiceGroup(t, 3, 400*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l := leaderOf(t, ms)
	for _, w := range []string{"w1", "w2", "w3"} {
		join(t, ctx, l, w, "127.0.0.1:1"+w[1:])
	}
	gen := func() uint64 {
		st, err := l.client.Status(ctx, &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st.GetGeneration()
	}
	g0 := gen()
	// w1 and w2 heartbeat, w3 does not: its lease expires and the ring changes.
	stopBeat := make(chan struct{})
	beatDone := make(chan struct{})
	go func() {
		defer close(beatDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopBeat:
				return
			case <-tick.C:
				for _, w := range []string{"w1", "w2"} {
					l.client.Heartbeat(ctx, &pb.HeartbeatRequest{WorkerId: w})
				}
			}
		}
	}()
	eventually(t, 5*time.Second, "w3 removed after its lease", func() error {
		st, err := l.client.Status(ctx, &pb.StatusRequest{})
		return yet(err == nil && len(st.GetWorkers()) == 2)
	})
	if g := gen(); g != g0+1 {
		t.Fatalf("generation %d after one removal, was %d", g, g0)
	}
	// A stale failure report is refused; a current one removes w2 at once.
	if _, err := l.client.ReportFailure(ctx, &pb.ReportFailureRequest{ReporterId: "w1", FailedId: "w2", Generation: g0}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("stale failure report: %v", err)
	}
	r, err := l.client.ReportFailure(ctx, &pb.ReportFailureRequest{ReporterId: "w1", FailedId: "w2", Generation: g0 + 1})
	if err != nil || r.GetGeneration() != g0+2 {
		t.Fatalf("failure report: %v %v", r, err)
	}
	close(stopBeat)
	<-beatDone
}

func TestServiceLeaderKilled(t *testing.T) {
	ms := startServiceGroup(t, 3, 2*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l := leaderOf(t, ms)
	sub, err := l.client.Submit(ctx, &pb.SubmitRequest{Job: &pb.JobSpec{Model: "pixelcnn", Dataset: "mnist", Batch: 32, Steps: 5, Lr: 1e-3, MinWorkers: 1}})
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		if m == l {
			m.stop()
			ms[i] = nil
		}
	}
	start := time.Now()
	nl := leaderOf(t, ms)
	t.Logf("new leader %s after %v", nl.id, time.Since(start))
	// The committed job survives on both remaining replicas (a follower
	// may apply it a heartbeat later).
	for _, m := range []*svcMember{nl, followerOf(ms, nl)} {
		eventually(t, 5*time.Second, "the committed job on "+m.id, func() error {
			st, err := m.client.Status(ctx, &pb.StatusRequest{})
			return yet(err == nil && len(st.GetJobs()) == 1 && st.GetJobs()[0].GetId() == sub.GetJobId())
		})
	}
	join(t, ctx, followerOf(ms, nl), "w9", "127.0.0.1:9009")
}

// TestClientFailsOver: a client given a dead address and a live one
// answers from the live one, learns the others, and keeps working when the
// coordinator it used dies.
func TestClientFailsOver(t *testing.T) {
	ms := startServiceGroup(t, 3, 2*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := leaderOf(t, ms)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	c, err := NewClient([]string{deadAddr, l.addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Status(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(c.Addrs()); got != 4 {
		t.Fatalf("client knows %d addresses, want the dead one and all 3 coordinators", got)
	}
	for i, m := range ms {
		if m == l {
			m.stop()
			ms[i] = nil
		}
	}
	id, err := c.Submit(ctx, &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 64, Steps: 10, Lr: 1e-3, MinWorkers: 1})
	if err != nil || id == "" {
		t.Fatalf("submit after the leader died: %q %v", id, err)
	}
	if _, err := NewClient(nil); err == nil {
		t.Fatal("a client without addresses was made")
	}
}

// TestServiceConcurrentJoins: 200 workers join and heartbeat at once,
// through all three coordinators; every replica ends with the same state.
func TestServiceConcurrentJoins(t *testing.T) {
	const n = 200
	ms := startServiceGroup(t, 3, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	leaderOf(t, ms)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			m := ms[i%3]
			id := fmt.Sprintf("w%03d", i)
			addr := fmt.Sprintf("127.0.0.1:%d", 20000+i)
			var err error
			for try := 0; try < 50; try++ {
				// With a secret: a retry after a lost answer (Unavailable
				// once the first attempt committed) must find the same one.
				if _, err = m.client.Join(ctx, &pb.JoinRequest{WorkerId: id, Addr: addr, Secret: "s-" + id}); status.Code(err) != codes.Unavailable {
					break
				}
			}
			if err == nil {
				for try := 0; try < 50; try++ {
					if _, err = m.client.Heartbeat(ctx, &pb.HeartbeatRequest{WorkerId: id, Addr: addr}); status.Code(err) != codes.Unavailable {
						break
					}
				}
			}
			if err != nil {
				err = fmt.Errorf("worker %s: %w", id, err)
			}
			errs <- err
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var want []byte
	for _, m := range ms {
		eventually(t, 10*time.Second, "replica "+m.id+" holds all workers", func() error {
			var got []byte
			var workers int
			var err error
			m.svc.fsm.Read(func(st *State) {
				workers = len(st.Workers())
				got, err = st.Encode()
			})
			if err != nil {
				return err
			}
			if workers != n {
				return fmt.Errorf("%d workers", workers)
			}
			if want == nil {
				want = got
			} else if !bytes.Equal(got, want) {
				return errors.New("state differs from the first replica's")
			}
			return nil
		})
	}
}

// benchClient starts a 3-coordinator group and returns a failover Client
// whose first address is a follower (so writes are forwarded, as they are
// for a worker that joined through a follower), as a worker would use it.
func benchClient(b *testing.B) *Client {
	ms := startServiceGroup(b, 3, time.Minute)
	l := leaderOf(b, ms)
	addrs := []string{followerOf(ms, l).addr}
	for _, m := range ms {
		if m.addr != addrs[0] {
			addrs = append(addrs, m.addr)
		}
	}
	c, err := NewClient(addrs)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkServiceJoin measures committed joins per second through a
// follower of a 3-coordinator group on loopback, with 16 concurrent callers.
func BenchmarkServiceJoin(b *testing.B) {
	c := benchClient(b)
	ctx := context.Background()
	var next atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb_ *testing.PB) {
		for pb_.Next() {
			i := next.Add(1)
			if _, err := c.Join(ctx, &pb.JoinRequest{WorkerId: fmt.Sprintf("w%d", i), Addr: fmt.Sprintf("10.0.%d.%d:7000", i/250%250, i%250)}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "joins/s")
}

// BenchmarkServiceHeartbeat measures heartbeats per second through a
// follower (forwarded to the leader, not replicated), 16 concurrent callers.
func BenchmarkServiceHeartbeat(b *testing.B) {
	c := benchClient(b)
	ctx := context.Background()
	const workers = 64
	for i := 0; i < workers; i++ {
		if _, err := c.Join(ctx, &pb.JoinRequest{WorkerId: fmt.Sprintf("w%d", i), Addr: fmt.Sprintf("127.0.0.1:%d", 20000+i)}); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb_ *testing.PB) {
		for pb_.Next() {
			i := next.Add(1) % workers
			if _, err := c.Heartbeat(ctx, &pb.HeartbeatRequest{WorkerId: fmt.Sprintf("w%d", i)}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "heartbeats/s")
}

// rawCodec sends bytes as they are, to put malformed messages on the wire.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), b...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// TestServiceBadInput: malformed, oversized and impossible requests get a
// precise status, and none of them changes the replicated state.
func TestServiceBadInput(t *testing.T) {
	ms := startServiceGroup(t, 3, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l := leaderOf(t, ms)
	f := followerOf(ms, l)
	join(t, ctx, f, "w1", "127.0.0.1:9001")
	stateOf := func(m *svcMember) []byte {
		var b []byte
		m.svc.fsm.Read(func(st *State) { b, _ = st.Encode() })
		return b
	}
	eventually(t, 5*time.Second, "follower caught up", func() error { return yet(bytes.Equal(stateOf(f), stateOf(l))) })
	before := stateOf(l)

	huge := strings.Repeat("x", 1<<20)
	good := &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 64, Steps: 10, Lr: 1e-3, MinWorkers: 1}
	bad := func(mut func(*pb.JobSpec)) *pb.JobSpec {
		s := proto.CloneOf(good)
		mut(s)
		return s
	}
	cases := []struct {
		name string
		call func() error
		code codes.Code
		want string
	}{
		{"oversized worker id", func() error {
			_, err := f.client.Join(ctx, &pb.JoinRequest{WorkerId: huge, Addr: "127.0.0.1:9"})
			return err
		}, codes.InvalidArgument, "worker_id"},
		{"address without port", func() error {
			_, err := f.client.Join(ctx, &pb.JoinRequest{WorkerId: "w2", Addr: "somewhere"})
			return err
		}, codes.InvalidArgument, "addr"},
		{"another worker's id", func() error {
			_, err := f.client.Join(ctx, &pb.JoinRequest{WorkerId: "w1", Addr: "127.0.0.1:9002"})
			return err
		}, codes.PermissionDenied, "w1"},
		{"heartbeat claiming another's id", func() error {
			_, err := f.client.Heartbeat(ctx, &pb.HeartbeatRequest{WorkerId: "w1", Addr: "127.0.0.1:9002"})
			return err
		}, codes.AlreadyExists, "w1"},
		{"stale failure report", func() error {
			_, err := f.client.ReportFailure(ctx, &pb.ReportFailureRequest{ReporterId: "w9", FailedId: "w1", Generation: 999})
			return err
		}, codes.FailedPrecondition, "generation"},
		{"unknown model", func() error {
			_, err := f.client.Submit(ctx, &pb.SubmitRequest{Job: bad(func(s *pb.JobSpec) { s.Model = "gan" })})
			return err
		}, codes.InvalidArgument, "model"},
		{"zero batch", func() error {
			_, err := f.client.Submit(ctx, &pb.SubmitRequest{Job: bad(func(s *pb.JobSpec) { s.Batch = 0 })})
			return err
		}, codes.InvalidArgument, "batch"},
		{"negative learning rate", func() error {
			_, err := f.client.Submit(ctx, &pb.SubmitRequest{Job: bad(func(s *pb.JobSpec) { s.Lr = -1 })})
			return err
		}, codes.InvalidArgument, "lr"},
		{"no job", func() error {
			_, err := f.client.Submit(ctx, &pb.SubmitRequest{})
			return err
		}, codes.InvalidArgument, ""},
		{"garbage bytes", func() error {
			in, out := []byte{0xff, 0xff, 0xff, 0x0f, 0x01}, []byte(nil)
			return f.conn.Invoke(ctx, "/gencluster.v1.Coordinator/Join", &in, &out, grpc.ForceCodec(rawCodec{}))
		}, codes.Internal, "unmarshal"},
		{"message over the size limit", func() error {
			in, out := make([]byte, 5<<20), []byte(nil)
			return f.conn.Invoke(ctx, "/gencluster.v1.Coordinator/Submit", &in, &out, grpc.ForceCodec(rawCodec{}))
		}, codes.ResourceExhausted, ""},
	}
	for _, c := range cases {
		err := c.call()
		if status.Code(err) != c.code || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %v mentioning %q", c.name, err, c.code, c.want)
		}
	}
	if !bytes.Equal(stateOf(l), before) {
		t.Fatal("bad requests changed the replicated state")
	}
}

// TestSubmitIdempotent: a submit retried with the same request id (after a
// lost answer) returns the first job's id and queues nothing new.
func TestSubmitIdempotent(t *testing.T) {
	ms := startServiceGroup(t, 3, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f := followerOf(ms, leaderOf(t, ms))
	spec := &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 64, Steps: 10, Lr: 1e-3, MinWorkers: 1}
	var ids []string
	for _, rid := range []string{"r1", "r1", "r2", ""} {
		r, err := f.client.Submit(ctx, &pb.SubmitRequest{Job: spec, RequestId: rid})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.GetJobId())
	}
	if ids[0] != ids[1] || ids[1] == ids[2] || ids[2] == ids[3] {
		t.Fatalf("job ids %v: the retried r1 must give the same id, the others new ones", ids)
	}
	eventually(t, 5*time.Second, "three jobs", func() error {
		st, err := f.client.Status(ctx, &pb.StatusRequest{})
		return yet(err == nil && len(st.GetJobs()) == 3)
	})
	if _, err := f.client.Submit(ctx, &pb.SubmitRequest{Job: spec, RequestId: "bad\x00id"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("unprintable request id: %v", err)
	}
}

// TestServiceProgressAndFinish: progress reports from the ring's generation
// show in status; a stale one is refused; finishing starts the next job.
func TestServiceProgressAndFinish(t *testing.T) {
	ms := startServiceGroup(t, 3, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f := followerOf(ms, leaderOf(t, ms))
	var gen uint64
	for _, w := range []string{"w1", "w2"} { // two ring changes: generation 2
		gen = join(t, ctx, f, w, "127.0.0.1:900"+w[1:]).GetAssignment().GetGeneration()
	}
	spec := &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 64, Steps: 10, Lr: 1e-3, MinWorkers: 1}
	j1, err := f.client.Submit(ctx, &pb.SubmitRequest{Job: spec})
	if err != nil {
		t.Fatal(err)
	}
	j2, err := f.client.Submit(ctx, &pb.SubmitRequest{Job: spec})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.ReportProgress(ctx, &pb.ReportProgressRequest{WorkerId: "w1", JobId: j1.GetJobId(), Generation: gen, Step: 3, Loss: 120.5, ImagesPerSec: 900}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.ReportProgress(ctx, &pb.ReportProgressRequest{WorkerId: "w1", JobId: j1.GetJobId(), Generation: gen - 1, Step: 4, Loss: 1}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("stale progress: %v", err)
	}
	if _, err := f.client.ReportProgress(ctx, &pb.ReportProgressRequest{WorkerId: "w1", JobId: "job-99", Generation: gen, Step: 4, Loss: 1}); status.Code(err) != codes.NotFound {
		t.Fatalf("progress of an unknown job: %v", err)
	}
	eventually(t, 5*time.Second, "progress in status", func() error {
		st, err := f.client.Status(ctx, &pb.StatusRequest{})
		return yet(err == nil && st.GetJobs()[0].GetStep() == 3 && st.GetJobs()[0].GetLoss() == 120.5)
	})
	r, err := f.client.FinishJob(ctx, &pb.FinishJobRequest{WorkerId: "w1", JobId: j1.GetJobId()})
	if err != nil || r.GetNextJobId() != j2.GetJobId() {
		t.Fatalf("finish: %v %v", r, err)
	}
}

// A follower cut off from the leader answers Status with its own view and
// says so; the Client then prefers a coordinator that is not cut off, and
// returns the stale view only when none answers otherwise.
func TestStatusSaysWhenStale(t *testing.T) {
	ms := startServiceGroup(t, 3, time.Second)
	l := leaderOf(t, ms)
	ctx := context.Background()
	var followers []*svcMember
	for _, m := range ms {
		if m != l {
			followers = append(followers, m)
		}
	}
	r, err := followers[0].client.Status(ctx, &pb.StatusRequest{})
	if err != nil || r.GetStaleReason() != "" {
		t.Fatalf("status through a follower that reaches the leader: %v, %v", r.GetStaleReason(), err)
	}
	// The leader and the other follower go: the remaining one is alone.
	for i, m := range ms {
		if m != followers[0] {
			m.stop()
			ms[i] = nil
		}
	}
	eventually(t, 10*time.Second, "a stale answer", func() error {
		r, err := followers[0].client.Status(ctx, &pb.StatusRequest{})
		if err != nil {
			return err
		}
		if !strings.Contains(r.GetStaleReason(), "cannot reach the raft leader") {
			return fmt.Errorf("stale_reason %q", r.GetStaleReason())
		}
		return nil
	})
	c, err := NewClient([]string{followers[0].addr, l.addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err = c.Status(ctx)
	if err != nil || r.GetStaleReason() == "" {
		t.Fatalf("client with only a cut-off coordinator answering: %v, %v", r.GetStaleReason(), err)
	}
}
