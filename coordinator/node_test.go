package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
	"google.golang.org/grpc"

	"github.com/gencluster/gencluster/raftlog"
	"github.com/gencluster/gencluster/rafttransport"
)

// ---------------------------------------------------------------------------
// Test helpers shared by this package's tests.

// eventually polls cond every 10ms until it returns nil, failing the test
// with cond's last error after timeout. The one poll helper of this package's
// raft tests.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		<-tick.C
	}
}

// checkGoroutines records the goroutine count; the returned function,
// called after everything is closed, waits for the count to come back.
func checkGoroutines(t testing.TB) func() {
	base := runtime.NumGoroutine()
	return func() {
		t.Helper()
		if t.Failed() {
			return // nodes are still up: Cleanup closes them after this
		}
		eventually(t, 5*time.Second, "goroutines exit after close", func() error {
			if n := runtime.NumGoroutine(); n > base {
				var b strings.Builder
				pprof.Lookup("goroutine").WriteTo(&b, 1)
				return fmt.Errorf("%d before, %d now:\n%s", base, n, b.String())
			}
			return nil
		})
	}
}

// listenLoopback listens on a loopback port below the kernel's ephemeral
// range, so that no outgoing connection (of this test or of another test
// process) takes the port while its node is down for a restart.
func listenLoopback(t testing.TB) net.Listener {
	t.Helper()
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &lo)
	}
	if base := lo - 12000; base >= 1024 {
		for range 100 {
			if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+mrand.IntN(12000))); err == nil {
				return l
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testLogger writes slog records to t.Log until the test ends; raft's
// stragglers cannot log into a finished test.
func testLogger(t testing.TB, attrs ...any) *slog.Logger {
	w := &testLogWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	level := slog.LevelInfo
	if os.Getenv("RAFT_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With(attrs...)
}

type testLogWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// kvFSM is the tests' state machine: "k=v" sets a key, "!msg" answers
// with an error, anything else is a bad command. Apply returns the index.
type kvFSM struct {
	mu       sync.Mutex
	m        map[string]string
	restores int
}

func newKV() *kvFSM { return &kvFSM{m: map[string]string{}} }

var errKV = errors.New("kv: refused")

func (f *kvFSM) Apply(l *raft.Log) any {
	s := string(l.Data)
	if msg, ok := strings.CutPrefix(s, "!"); ok {
		return fmt.Errorf("%w: %s", errKV, msg)
	}
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		panic(fmt.Sprintf("kv: undecodable entry %q", s))
	}
	f.mu.Lock()
	f.m[k] = v
	f.mu.Unlock()
	return l.Index
}

func (f *kvFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return kvSnapshot(maps.Clone(f.m)), nil
}

func (f *kvFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	m := map[string]string{}
	if err := json.NewDecoder(rc).Decode(&m); err != nil {
		return err
	}
	f.mu.Lock()
	f.m = m
	f.restores++
	f.mu.Unlock()
	return nil
}

func (f *kvFSM) state() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.m)
}

func (f *kvFSM) restoreCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restores
}

type kvSnapshot map[string]string

func (s kvSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(map[string]string(s)); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s kvSnapshot) Release() {}

// ---------------------------------------------------------------------------
// A cluster of Nodes, each on its own gRPC server on a loopback port.

type testNode struct {
	id, addr, dir string
	fsm           *kvFSM
	node          *Node
	srv           *grpc.Server
	served        chan struct{}
	// faults, if not nil, is the node's rafttransport.Faults
	// (NodeConfig.RaftFaults), the same one across restarts.
	faults *rafttransport.FaultSet
}

type testCluster struct {
	t     *testing.T
	peers []Peer
	nodes []*testNode
	tune  func(*NodeConfig)
}

func fastConfig(c *NodeConfig) {
	c.HeartbeatTimeout = 200 * time.Millisecond
	c.ElectionTimeout = 200 * time.Millisecond
	c.LeaderLeaseTimeout = 100 * time.Millisecond
	c.CommitTimeout = 10 * time.Millisecond
	c.RPCTimeout = time.Second
}

// newCluster starts n bootstrapped nodes and registers their cleanup.
func newCluster(t *testing.T, n int, tune func(*NodeConfig)) *testCluster {
	c := &testCluster{t: t, tune: tune}
	var lis []net.Listener
	for i := range n {
		l := listenLoopback(t)
		lis = append(lis, l)
		tn := &testNode{id: fmt.Sprintf("c%d", i+1), addr: l.Addr().String(), dir: t.TempDir(), faults: new(rafttransport.FaultSet)}
		c.nodes = append(c.nodes, tn)
		c.peers = append(c.peers, Peer{ID: tn.id, Addr: tn.addr})
	}
	t.Cleanup(func() {
		for _, tn := range c.nodes {
			c.stop(tn)
		}
	})
	for i, tn := range c.nodes {
		if err := c.start(tn, lis[i], c.peers, false); err != nil {
			t.Fatalf("start %s: %v", tn.id, err)
		}
	}
	return c
}

func (c *testCluster) config(tn *testNode, peers []Peer, join bool) NodeConfig {
	cfg := NodeConfig{
		ID: tn.id, Addr: tn.addr, DataDir: tn.dir, Peers: peers, Join: join,
		FSM: tn.fsm, Logger: testLogger(c.t, "node", tn.id),
	}
	if tn.faults != nil {
		cfg.RaftFaults = tn.faults
	}
	fastConfig(&cfg)
	if c.tune != nil {
		c.tune(&cfg)
	}
	return cfg
}

// start starts tn (again) with a fresh FSM on lis, or on a new listener at
// tn.addr if lis is nil.
func (c *testCluster) start(tn *testNode, lis net.Listener, peers []Peer, join bool) error {
	if lis == nil {
		// The port was this node's; a connection of the stopped server
		// may hold it for a moment.
		eventually(c.t, 5*time.Second, "listen again on "+tn.addr, func() (err error) {
			lis, err = net.Listen("tcp", tn.addr)
			return err
		})
	}
	tn.fsm = newKV()
	tn.srv = grpc.NewServer()
	node, err := NewNode(context.Background(), c.config(tn, peers, join), tn.srv)
	if err != nil {
		tn.srv.Stop()
		lis.Close()
		tn.srv = nil
		return err
	}
	tn.node = node
	tn.served = make(chan struct{})
	go func(srv *grpc.Server, served chan struct{}) {
		defer close(served)
		srv.Serve(lis)
	}(tn.srv, tn.served)
	return nil
}

// stop kills tn hard: its server first (connections drop), then the node,
// without a leadership transfer.
func (c *testCluster) stop(tn *testNode) {
	if tn.srv == nil {
		return
	}
	tn.srv.Stop()
	<-tn.served
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tn.node.Close(ctx); err != nil {
		c.t.Errorf("close %s: %v", tn.id, err)
	}
	tn.srv = nil
}

func (c *testCluster) running() []*testNode {
	var out []*testNode
	for _, tn := range c.nodes {
		if tn.srv != nil {
			out = append(out, tn)
		}
	}
	return out
}

// leader waits until the running nodes agree on exactly one leader among
// them, and returns it.
// others returns the cluster's nodes but tn, in order.
func (c *testCluster) others(tn *testNode) []*testNode {
	var out []*testNode
	for _, o := range c.nodes {
		if o != tn {
			out = append(out, o)
		}
	}
	return out
}

func (c *testCluster) leader(among ...*testNode) *testNode {
	c.t.Helper()
	if len(among) == 0 {
		among = c.running()
	}
	var leader *testNode
	eventually(c.t, 10*time.Second, "one agreed leader", func() error {
		leader = nil
		for _, tn := range among {
			if tn.node.IsLeader() {
				if leader != nil {
					return fmt.Errorf("two leaders: %s and %s", leader.id, tn.id)
				}
				leader = tn
			}
		}
		if leader == nil {
			return errors.New("no leader")
		}
		for _, tn := range among {
			if id, addr := tn.node.Leader(); id != leader.id || addr != leader.addr {
				return fmt.Errorf("%s thinks the leader is %q at %q, not %s", tn.id, id, addr, leader.id)
			}
		}
		return nil
	})
	return leader
}

// apply applies cmd on tn. If tn lost the lead meanwhile (a loaded test
// machine can miss a heartbeat), it retries on the new leader: a kv write
// is idempotent.
func (c *testCluster) apply(tn *testNode, cmd string) uint64 {
	c.t.Helper()
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := tn.node.Apply(ctx, []byte(cmd))
		cancel()
		if err == nil {
			return r.(uint64)
		}
		if attempt < 3 && (errors.Is(err, ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost)) {
			c.t.Logf("apply %q on %s: %v; retrying on the leader", cmd, tn.id, err)
			tn = c.leader()
			continue
		}
		c.t.Fatalf("apply %q on %s: %v", cmd, tn.id, err)
	}
}

// converge waits until every node in among holds want.
func (c *testCluster) converge(want map[string]string, among ...*testNode) {
	c.t.Helper()
	if len(among) == 0 {
		among = c.running()
	}
	eventually(c.t, 10*time.Second, "replicas converge", func() error {
		for _, tn := range among {
			if got := tn.fsm.state(); !maps.Equal(got, want) {
				return fmt.Errorf("%s holds %d keys %v, want %d keys", tn.id, len(got), abbrev(got), len(want))
			}
		}
		return nil
	})
}

func abbrev(m map[string]string) []string {
	keys := slices.Sorted(maps.Keys(m))
	if len(keys) > 8 {
		keys = append(keys[:8], "...")
	}
	return keys
}

func writes(c *testCluster, leader *testNode, prefix string, n int, into map[string]string) {
	for i := range n {
		k, v := fmt.Sprintf("%s%03d", prefix, i), fmt.Sprintf("v%d", i)
		c.apply(leader, k+"="+v)
		into[k] = v
	}
}

// ---------------------------------------------------------------------------

func TestNodeElection(t *testing.T) {
	defer checkGoroutines(t)()
	var mu sync.Mutex
	leading := map[string]bool{}
	c := newCluster(t, 3, nil)
	for _, tn := range c.nodes {
		id := tn.id
		tn.node.OnLeadershipChange(func(v bool) { mu.Lock(); leading[id] = v; mu.Unlock() })
	}
	leader := c.leader()
	eventually(t, 5*time.Second, "leadership callbacks", func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, tn := range c.nodes {
			if leading[tn.id] != (tn == leader) {
				return fmt.Errorf("callbacks say %v, leader is %s", leading, leader.id)
			}
		}
		return nil
	})

	want := map[string]string{}
	writes(c, leader, "k", 10, want)
	c.converge(want)

	// A follower refuses, naming the leader.
	follower := c.others(leader)[0]
	_, err := follower.node.Apply(context.Background(), []byte("x=1"))
	var nle *NotLeaderError
	if !errors.Is(err, ErrNotLeader) || !errors.As(err, &nle) || nle.LeaderAddr != leader.addr || nle.LeaderID != leader.id {
		t.Fatalf("apply on a follower: %v, want a NotLeaderError naming %s at %s", err, leader.id, leader.addr)
	}
	if err := follower.node.Barrier(context.Background()); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("barrier on a follower: %v", err)
	}
	// The FSM's error comes back as the error.
	if _, err := leader.node.Apply(context.Background(), []byte("!no")); !errors.Is(err, errKV) {
		t.Fatalf("apply of a refused command: %v, want errKV", err)
	}
	// An expired ctx.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := leader.node.Apply(ctx, []byte("y=1")); !errors.Is(err, context.Canceled) {
		t.Fatalf("apply with a cancelled ctx: %v", err)
	}
	if err := leader.node.Barrier(context.Background()); err != nil {
		t.Fatal(err)
	}

	servers, err := leader.node.Servers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 3 {
		t.Fatalf("servers: %+v", servers)
	}
	for _, s := range servers {
		wantState := StateFollower
		if s.ID == leader.id {
			wantState = StateLeader
		}
		if !s.Voter || s.State != wantState || s.Addr != c.peers[slices.IndexFunc(c.peers, func(p Peer) bool { return p.ID == s.ID })].Addr {
			t.Errorf("leader's view of %+v, want a voter in state %s", s, wantState)
		}
	}
	fs, err := follower.node.Servers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range fs {
		wantState := StateUnknown
		switch s.ID {
		case leader.id:
			wantState = StateLeader
		case follower.id:
			wantState = StateFollower
		}
		if s.State != wantState {
			t.Errorf("follower's view of %+v, want state %s", s, wantState)
		}
	}

	// Close is idempotent, and a closed leader reports the loss.
	c.stop(leader)
	if err := leader.node.Close(context.Background()); err != nil {
		t.Fatalf("second close: %v", err)
	}
	mu.Lock()
	if leading[leader.id] {
		t.Errorf("the closed leader was not told it stopped leading")
	}
	mu.Unlock()
	c.stop(c.nodes[0])
	c.stop(c.nodes[1])
	c.stop(c.nodes[2])
}

func TestNodeLeaderHardStop(t *testing.T) {
	defer checkGoroutines(t)()
	c := newCluster(t, 3, nil)
	old := c.leader()
	want := map[string]string{}
	writes(c, old, "a", 20, want)

	start := time.Now()
	c.stop(old)
	survivors := c.others(old)
	leader := c.leader(survivors...)
	t.Logf("new leader %s %v after the old one stopped", leader.id, time.Since(start).Round(time.Millisecond))
	if time.Since(start) > 5*time.Second {
		t.Errorf("failover took %v", time.Since(start))
	}
	if err := leader.node.Barrier(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Every write the old leader committed is on the survivors.
	c.converge(want, survivors...)
	writes(c, leader, "b", 10, want)
	c.converge(want, survivors...)
	for _, tn := range c.nodes {
		c.stop(tn)
	}
}

func TestNodeRestartCatchesUp(t *testing.T) {
	defer checkGoroutines(t)()
	c := newCluster(t, 3, nil)
	leader := c.leader()
	want := map[string]string{}
	writes(c, leader, "a", 10, want)
	c.converge(want)

	down := c.others(leader)[0]
	c.stop(down)
	writes(c, leader, "b", 10, want)

	// Restart with the same peer list: it agrees with the stored group.
	if err := c.start(down, nil, c.peers, false); err != nil {
		t.Fatalf("restart %s: %v", down.id, err)
	}
	c.converge(want)
	// And once more without a peer list.
	c.stop(down)
	writes(c, leader, "c", 5, want)
	if err := c.start(down, nil, nil, false); err != nil {
		t.Fatalf("restart %s without peers: %v", down.id, err)
	}
	c.converge(want)
	for _, tn := range c.nodes {
		c.stop(tn)
	}
}

func TestNodeSnapshotInstall(t *testing.T) {
	defer checkGoroutines(t)()
	c := newCluster(t, 3, func(cfg *NodeConfig) {
		cfg.SnapshotThreshold = 16
		cfg.TrailingLogs = 4
		cfg.SnapshotInterval = time.Hour // only the snapshots the test asks for
	})
	leader := c.leader()
	want := map[string]string{}
	writes(c, leader, "a", 5, want)
	c.converge(want)

	down := c.others(leader)[0]
	c.stop(down)
	writes(c, leader, "b", 40, want)
	if err := leader.node.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The leader's log no longer reaches back to what the stopped node has.
	first, err := leader.node.store.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	if first <= 10 {
		t.Fatalf("leader's log starts at %d: not truncated", first)
	}
	writes(c, leader, "c", 3, want)

	if err := c.start(down, nil, nil, false); err != nil {
		t.Fatalf("restart %s: %v", down.id, err)
	}
	c.converge(want)
	if down.fsm.restoreCount() == 0 {
		t.Fatalf("%s caught up without installing a snapshot", down.id)
	}
	// And it restarts from its own snapshot and log.
	c.stop(down)
	if err := c.start(down, nil, nil, false); err != nil {
		t.Fatalf("restart %s: %v", down.id, err)
	}
	c.converge(want)
	for _, tn := range c.nodes {
		c.stop(tn)
	}
}

func TestNodePartitionedLeader(t *testing.T) {
	defer checkGoroutines(t)()
	c := newCluster(t, 3, nil)
	old := c.leader()
	want := map[string]string{}
	writes(c, old, "a", 5, want)
	c.converge(want)

	// Cut the leader off, both ways, on every node.
	var majority []*testNode
	for _, tn := range c.nodes {
		if tn == old {
			tn.faults.SetCut(func(raft.ServerAddress) bool { return true })
		} else {
			tn.faults.SetCut(func(a raft.ServerAddress) bool { return string(a) == old.addr })
			majority = append(majority, tn)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	_, err := old.node.Apply(ctx, []byte("lost=1"))
	cancel()
	if err == nil {
		t.Fatal("the isolated leader committed a write")
	}
	t.Logf("apply on the isolated leader: %v", err)
	eventually(t, 5*time.Second, "isolated leader steps down", func() error {
		if old.node.IsLeader() {
			return errors.New("still leader")
		}
		return nil
	})

	leader := c.leader(majority...)
	writes(c, leader, "b", 5, want)
	c.converge(want, majority...)
	if _, ok := old.fsm.state()["b000"]; ok {
		t.Fatal("the isolated node applied a write it cannot have received")
	}

	// Heal: the old leader follows and converges; "lost" is nowhere.
	for _, tn := range c.nodes {
		tn.faults.SetCut(nil)
	}
	c.leader()
	writes(c, leader, "c", 2, want)
	c.converge(want)
	for _, tn := range c.nodes {
		c.stop(tn)
	}
}

func TestNodeSingle(t *testing.T) {
	defer checkGoroutines(t)()
	c := newCluster(t, 1, nil)
	tn := c.leader()
	want := map[string]string{}
	writes(c, tn, "a", 5, want)
	c.converge(want)
	if err := tn.node.WaitLeader(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.stop(tn)
	if err := c.start(tn, nil, nil, false); err != nil {
		t.Fatal(err)
	}
	c.leader()
	writes(c, tn, "b", 1, want)
	c.converge(want)
	c.stop(tn)
}

func TestNodeDataDirInUse(t *testing.T) {
	defer checkGoroutines(t)()
	c := newCluster(t, 1, nil)
	tn := c.nodes[0]
	second := &testNode{id: tn.id, addr: "127.0.0.1:1", dir: tn.dir, fsm: newKV()}
	start := time.Now()
	_, err := NewNode(context.Background(), c.config(second, c.peers[:0], false), grpc.NewServer())
	if !errors.Is(err, ErrDataDirInUse) || !strings.Contains(err.Error(), "in use by another gencluster process") ||
		!strings.Contains(err.Error(), tn.dir) {
		t.Fatalf("second node on the same data dir: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the in-use error took %v", d)
	}
	t.Logf("%v (after %v)", err, time.Since(start).Round(time.Millisecond))
	c.stop(tn)
}

func TestNodeStartRules(t *testing.T) {
	defer checkGoroutines(t)()
	c := newCluster(t, 3, nil)
	leader := c.leader()
	want := map[string]string{}
	writes(c, leader, "a", 3, want)
	c.converge(want)
	tn := c.nodes[0]
	c.stop(tn)

	other := c.peers[1]
	cases := []struct {
		name  string
		peers []Peer
		want  error
		say   []string
	}{
		{"a new member", append(slices.Clone(c.peers), Peer{"c9", "127.0.0.1:9"}), ErrPeersMismatch,
			[]string{"c9=127.0.0.1:9 is not in the stored group", "Start without --peers"}},
		{"a member missing", c.peers[:2], ErrPeersMismatch, []string{c.peers[2].String() + " is missing from the peer list"}},
		{"a member moved", []Peer{c.peers[0], {other.ID, "127.0.0.1:9"}, c.peers[2]}, ErrPeersMismatch,
			[]string{other.ID + " is at " + other.Addr + " in the stored group, at 127.0.0.1:9 in the peer list"}},
		{"self absent", c.peers[1:], ErrBadPeers, []string{"this node (c1) is not in the peer list"}},
		{"duplicate id", append(slices.Clone(c.peers), Peer{"c2", "127.0.0.1:9"}), ErrBadPeers, []string{"c2 listed twice"}},
		{"bad address", []Peer{c.peers[0], {"c2", "nohost"}}, ErrBadPeers, []string{"peer c2"}},
	}
	for _, tc := range cases {
		err := c.start(tn, nil, tc.peers, false)
		if err == nil {
			c.stop(tn)
			t.Fatalf("%s: started", tc.name)
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		for _, s := range tc.say {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: %q does not say %q", tc.name, err, s)
			}
		}
		t.Logf("%s: %v", tc.name, err)
	}
	// The right list, and no list, both restart it.
	reversed := slices.Clone(c.peers)
	slices.Reverse(reversed)
	if err := c.start(tn, nil, reversed, false); err != nil {
		t.Fatal(err)
	}
	c.converge(want)
	c.stop(tn)
	if err := c.start(tn, nil, nil, false); err != nil {
		t.Fatal(err)
	}
	c.converge(want)

	// A first start needs peers.
	fresh := &testNode{id: "c7", addr: "127.0.0.1:7", dir: t.TempDir(), fsm: newKV()}
	if _, err := NewNode(context.Background(), c.config(fresh, nil, false), grpc.NewServer()); !errors.Is(err, ErrBadPeers) ||
		!strings.Contains(err.Error(), "first start needs --peers") {
		t.Fatalf("first start without peers: %v", err)
	}
	for _, n := range c.nodes {
		c.stop(n)
	}
}

func TestNodeAddRemoveVoter(t *testing.T) {
	defer checkGoroutines(t)()
	c := newCluster(t, 3, nil)
	leader := c.leader()
	want := map[string]string{}
	writes(c, leader, "a", 5, want)

	// A fourth node starts empty and waits to be added.
	l := listenLoopback(t)
	n4 := &testNode{id: "c4", addr: l.Addr().String(), dir: t.TempDir()}
	c.nodes = append(c.nodes, n4)
	if err := c.start(n4, l, nil, true); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := leader.node.AddVoter(ctx, n4.id, n4.addr); err != nil {
		t.Fatal(err)
	}
	if err := leader.node.AddVoter(ctx, n4.id, n4.addr); err != nil {
		t.Fatalf("second AddVoter: %v", err)
	}
	eventually(t, 5*time.Second, "c4 adopts the cluster id", func() error {
		if got, want := n4.node.ClusterID(), leader.node.ClusterID(); got != want {
			return fmt.Errorf("c4 has cluster id %q, the leader %q", got, want)
		}
		return nil
	})
	if err := leader.node.AddVoter(ctx, n4.id, "127.0.0.1:9"); !errors.Is(err, ErrServerConflict) {
		t.Fatalf("AddVoter of c4 at another address: %v", err)
	}
	if err := leader.node.AddVoter(ctx, "c5", n4.addr); !errors.Is(err, ErrServerConflict) {
		t.Fatalf("AddVoter of c5 at c4's address: %v", err)
	}
	var follower *testNode
	for _, tn := range c.nodes[:3] {
		if tn != leader {
			follower = tn
		}
	}
	if err := follower.node.AddVoter(ctx, "c5", "127.0.0.1:9"); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("AddVoter on a follower: %v", err)
	}
	writes(c, leader, "b", 5, want)
	c.converge(want)
	eventually(t, 5*time.Second, "c4 in everyone's configuration", func() error {
		for _, tn := range c.nodes {
			servers, err := tn.node.Servers(ctx)
			if err != nil {
				return err
			}
			if len(servers) != 4 {
				return fmt.Errorf("%s sees %+v", tn.id, servers)
			}
		}
		return nil
	})

	if err := leader.node.RemoveServer(ctx, n4.id); err != nil {
		t.Fatal(err)
	}
	if err := leader.node.RemoveServer(ctx, n4.id); err != nil {
		t.Fatalf("second RemoveServer: %v", err)
	}
	servers, err := leader.node.Servers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 3 || slices.ContainsFunc(servers, func(s Server) bool { return s.ID == n4.id }) {
		t.Fatalf("after RemoveServer: %+v", servers)
	}
	c.stop(n4)
	writes(c, leader, "c", 2, want)
	c.converge(want, c.nodes[:3]...)
	for _, tn := range c.nodes {
		c.stop(tn)
	}
}

func TestNodeCorruptStore(t *testing.T) {
	defer checkGoroutines(t)()
	// A real store to damage.
	c := newCluster(t, 1, nil)
	tn := c.leader()
	writes(c, tn, "a", 50, map[string]string{})
	c.stop(tn)
	good, err := os.ReadFile(filepath.Join(tn.dir, raftDBFile))
	if err != nil {
		t.Fatal(err)
	}

	otherBolt := filepath.Join(t.TempDir(), "other.db")
	db, err := bbolt.Open(otherBolt, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("checkpoints")); return err }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	other, err := os.ReadFile(otherBolt)
	if err != nil {
		t.Fatal(err)
	}
	zeroed := slices.Clone(good)
	clear(zeroed[:2*4096]) // both meta pages

	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"text", []byte("this is not a database\n")},
		{"zeroed meta pages", zeroed},
		{"another bbolt file", other},
		{"truncated", good[:len(good)/3]},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, raftDBFile), tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		bad := &testNode{id: "c1", addr: tn.addr, dir: dir}
		err := c.start(bad, nil, c.peers, false)
		if err == nil {
			c.stop(bad)
			t.Errorf("%s: a node started on it", tc.name)
			continue
		}
		if !errors.Is(err, ErrRaftStoreCorrupt) || !strings.Contains(err.Error(), dir) {
			t.Errorf("%s: %v, want ErrRaftStoreCorrupt naming the dir", tc.name, err)
		}
		t.Logf("%s: %v", tc.name, err)
	}
}

func TestParsePeers(t *testing.T) {
	got, err := ParsePeers("c1=h1:7000, c2=h2:7000,c3=[::1]:7000")
	if err != nil {
		t.Fatal(err)
	}
	if want := []Peer{{"c1", "h1:7000"}, {"c2", "h2:7000"}, {"c3", "[::1]:7000"}}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if err := validatePeers("c3", "[::1]:7000", got); err != nil {
		t.Fatal(err)
	}
	if p, err := ParsePeers(" "); err != nil || p != nil {
		t.Fatalf("empty: %v %v", p, err)
	}
	for _, bad := range []string{"c1", "c1=", "=h:1", "c1=h:1,,c2=h:2"} {
		if _, err := ParsePeers(bad); !errors.Is(err, ErrBadPeers) {
			t.Errorf("ParsePeers(%q): %v", bad, err)
		}
	}
	for _, tc := range []struct {
		peers string
		say   string
	}{
		{"c1=h:1,c2=h:1", "share the address"},
		{"c1=h:1,c2=0.0.0.0:2", "not an address peers can dial"},
		{"c1=h:1,c2=h:0", "no valid port"},
		{"c1=h:2", "gives this node (c1) the address h:2, but it advertises h:1"},
	} {
		p, err := ParsePeers(tc.peers)
		if err != nil {
			t.Fatal(err)
		}
		if err := validatePeers("c1", "h:1", p); !errors.Is(err, ErrBadPeers) || !strings.Contains(err.Error(), tc.say) {
			t.Errorf("%s: %v, want %q", tc.peers, err, tc.say)
		}
	}
}

func TestNodePrevCoveredBySnapshot(t *testing.T) {
	dir := t.TempDir()
	store, err := openRaftStore(filepath.Join(dir, raftDBFile))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, snapshotsRetained, raftlog.New(testLogger(t), "snapshot"))
	if err != nil {
		t.Fatal(err)
	}
	_, inmem := raft.NewInmemTransport("")
	defer inmem.Close()
	sink, err := snaps.Create(raft.SnapshotVersionMax, 10, 2, raft.Configuration{}, 1, inmem)
	if err != nil {
		t.Fatal(err)
	}
	sink.Write([]byte("{}"))
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	// A follower that installed the snapshot at 10 over an old log (3..5)
	// and appended 11..13 after it: no entry 10.
	for _, i := range []uint64{3, 4, 5, 11, 12, 13} {
		if err := store.StoreLog(&raft.Log{Index: i, Term: 2}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		prev, term uint64
		want       bool
	}{
		{10, 2, true},  // the snapshot's own entry and term
		{10, 1, false}, // another term: raft must refuse
		{11, 2, false}, // in the log: raft checks it
		{13, 2, false}, // the last entry
		{9, 2, false},  // not a snapshot's index
		{0, 0, false},  // no previous entry
		{20, 2, false}, // beyond the log: raft refuses
	} {
		req := &raft.AppendEntriesRequest{PrevLogEntry: tc.prev, PrevLogTerm: tc.term}
		if got := prevCoveredBySnapshot(req, 13, store, snaps); got != tc.want {
			t.Errorf("prev %d term %d: covered %v, want %v", tc.prev, tc.term, got, tc.want)
		}
	}
}

func TestNodeForeignCluster(t *testing.T) {
	defer checkGoroutines(t)()
	a := newCluster(t, 1, nil)
	b := newCluster(t, 1, nil)
	na, nb := a.leader(), b.leader()
	idA, idB := na.node.ClusterID(), nb.node.ClusterID()
	if idA == "" || idB == "" || idA == idB {
		t.Fatalf("cluster ids %q and %q", idA, idB)
	}
	if want := clusterIDFor(a.peers); idA != want {
		t.Fatalf("cluster id %q, want %q", idA, want)
	}
	// A's raft, given B's address (a peer address that changed hands),
	// is refused whatever it sends.
	var vote raft.RequestVoteResponse
	err := na.node.trans.RequestVote("c1", raft.ServerAddress(nb.addr), &raft.RequestVoteRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("c1"), Addr: []byte(na.addr)}, Term: 100}, &vote)
	if err == nil || !strings.Contains(err.Error(), "belongs to cluster "+idB) {
		t.Fatalf("a vote request from another cluster: %v", err)
	}
	t.Log(err)
	var ae raft.AppendEntriesResponse
	err = na.node.trans.AppendEntries("c1", raft.ServerAddress(nb.addr), &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("c1"), Addr: []byte(na.addr)},
		Term:      100, Entries: []*raft.Log{{Index: 1, Term: 100, Data: []byte("x=1")}}}, &ae)
	if err == nil {
		t.Fatal("entries from another cluster were accepted")
	}
	if !nb.node.IsLeader() {
		t.Fatal("B's leader was disturbed")
	}
	// The id survives a restart.
	a.stop(na)
	if err := a.start(na, nil, nil, false); err != nil {
		t.Fatal(err)
	}
	if got := na.node.ClusterID(); got != idA {
		t.Fatalf("cluster id after restart %q, want %q", got, idA)
	}
	a.stop(na)
	b.stop(nb)
}

// TestNodeSnapshotThenLostReply is the livelock prevCoveredBySnapshot
// works around: a follower installs a snapshot, appends the entries that
// follow it, and its reply is lost; the leader retries from the snapshot's
// index, which the follower's log lacks.
func TestNodeSnapshotThenLostReply(t *testing.T) {
	defer checkGoroutines(t)()
	c := newCluster(t, 3, func(cfg *NodeConfig) {
		cfg.SnapshotThreshold = 1 << 20
		cfg.TrailingLogs = 2
		cfg.SnapshotInterval = time.Hour
	})
	leader := c.leader()
	want := map[string]string{}
	writes(c, leader, "a", 3, want)
	c.converge(want)
	down := c.others(leader)[0]
	c.stop(down)
	writes(c, leader, "b", 20, want)
	if err := leader.node.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	writes(c, leader, "c", 2, want) // entries after the snapshot

	// In place before the node starts: it reads down.fsm, which start
	// replaces before the node's server serves.
	lost := make(chan uint64, 1)
	once := sync.Once{}
	down.faults.SetLoseReply(func(req *raft.AppendEntriesRequest) bool {
		drop := false
		if len(req.Entries) > 0 && down.fsm.restoreCount() > 0 {
			once.Do(func() { drop = true; lost <- req.PrevLogEntry })
		}
		return drop
	})
	if err := c.start(down, nil, nil, false); err != nil {
		t.Fatal(err)
	}
	select {
	case prev := <-lost:
		t.Logf("lost the reply to the entries after index %d", prev)
	case <-time.After(10 * time.Second):
		t.Fatal("no entries after the snapshot reached the follower")
	}
	c.converge(want)
	writes(c, leader, "d", 2, want)
	c.converge(want)
	for _, tn := range c.nodes {
		c.stop(tn)
	}
}
