package rafttransport

import (
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// answerAll is a raft that grants and accepts everything.
func answerAll(rpc raft.RPC) (any, error) {
	switch cmd := rpc.Command.(type) {
	case *raft.AppendEntriesRequest:
		return &raft.AppendEntriesResponse{RPCHeader: header("b"), Term: cmd.Term, Success: true}, nil
	case *raft.RequestVoteRequest:
		return &raft.RequestVoteResponse{RPCHeader: header("b"), Term: cmd.Term, Granted: true}, nil
	case *raft.InstallSnapshotRequest:
		return &raft.InstallSnapshotResponse{RPCHeader: header("b"), Term: cmd.Term, Success: true}, nil
	}
	return nil, errors.New("unexpected command")
}

// serveAll runs answerAll at tr until the returned stop is called (the
// test defers it, so that it runs before the goroutine check); the
// commands arrive on the returned channel.
func serveAll(tr *Transport) (seen <-chan any, stop func()) {
	stopCh := make(chan struct{})
	served := make(chan struct{})
	ch := make(chan any, 64)
	go func() {
		defer close(served)
		serve(tr, stopCh, ch, answerAll)
	}()
	var once sync.Once
	return ch, func() { once.Do(func() { close(stopCh); <-served }) }
}

// nothingSeen fails the test if raft at the other end got a command.
func nothingSeen(t *testing.T, seen <-chan any, what string) {
	t.Helper()
	select {
	case cmd := <-seen:
		t.Fatalf("%s: raft got %T", what, cmd)
	default:
	}
}

// entries is an AppendEntries from a that is no heartbeat.
func entries(from *Transport, term uint64) *raft.AppendEntriesRequest {
	return &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("a"), Addr: []byte(from.LocalAddr())},
		Term:      term, PrevLogEntry: 4, PrevLogTerm: 1,
		Entries: []*raft.Log{{Index: 5, Term: term, Type: raft.LogCommand, Data: []byte("k=v")}},
	}
}

func TestFaultSetZero(t *testing.T) {
	var nilSet *FaultSet
	var zero FaultSet
	for _, f := range []Faults{nilSet, &zero} {
		if f.Cut("x:1") || f.LoseReply(&raft.AppendEntriesRequest{}) {
			t.Errorf("%#v injects a fault", f)
		}
	}
	zero.SetCut(func(p raft.ServerAddress) bool { return p == "x:1" })
	zero.SetLoseReply(func(r *raft.AppendEntriesRequest) bool { return r.Term == 3 })
	if !zero.Cut("x:1") || zero.Cut("y:1") || !zero.LoseReply(&raft.AppendEntriesRequest{Term: 3}) || zero.LoseReply(&raft.AppendEntriesRequest{Term: 4}) {
		t.Error("the functions set are not what answers")
	}
	// The function runs without the lock: it may change the set.
	zero.SetCut(func(raft.ServerAddress) bool { zero.SetCut(nil); return true })
	if !zero.Cut("x:1") || zero.Cut("x:1") {
		t.Error("a cut that heals itself")
	}
	zero.SetLoseReply(nil)
	if zero.LoseReply(&raft.AppendEntriesRequest{Term: 3}) {
		t.Error("SetLoseReply(nil) still loses replies")
	}
}

func TestTransportFaultsCut(t *testing.T) {
	defer checkGoroutines(t)()
	var fa, fb FaultSet
	p := newFaultyPair(t, 2*time.Second, &fa, &fb)
	seen, stop := serveAll(p.b)
	defer stop()
	aAddr, bAddr := p.a.LocalAddr(), p.b.LocalAddr()

	// A pipeline opened before the cut.
	pipe, err := p.a.AppendEntriesPipeline("b", bAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer pipe.Close()

	// a cuts b off: nothing leaves a, at once.
	fa.SetCut(func(peer raft.ServerAddress) bool { return peer == bAddr })
	var vote raft.RequestVoteResponse
	if err := p.a.RequestVote("b", bAddr, &raft.RequestVoteRequest{RPCHeader: header("a"), Term: 1}, &vote); !errors.Is(err, errCutOff) {
		t.Fatalf("vote request across a cut: %v", err)
	}
	var resp raft.AppendEntriesResponse
	if err := p.a.AppendEntries("b", bAddr, entries(p.a, 2), &resp); !errors.Is(err, errCutOff) {
		t.Fatalf("entries across a cut: %v", err)
	}
	if _, err := p.a.AppendEntriesPipeline("b", bAddr); !errors.Is(err, errCutOff) {
		t.Fatalf("a pipeline across a cut: %v", err)
	}
	if _, err := pipe.AppendEntries(entries(p.a, 2), new(raft.AppendEntriesResponse)); !errors.Is(err, errCutOff) {
		t.Fatalf("pipelined entries across a cut: %v", err)
	}
	nothingSeen(t, seen, "a cut off b")

	// b cuts a off: a's requests reach b's server and are refused there,
	// before raft.
	fa.SetCut(nil)
	fb.SetCut(func(peer raft.ServerAddress) bool { return peer == aAddr })
	err = p.a.AppendEntries("b", bAddr, entries(p.a, 3), &resp)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), errCutOff.Error()) {
		t.Fatalf("entries from a cut-off sender: %v", err)
	}
	if err := p.a.RequestVote("b", bAddr, &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{Addr: []byte(aAddr)}, Term: 3}, &vote); status.Code(err) != codes.Unavailable {
		t.Fatalf("vote request from a cut-off sender: %v", err)
	}
	nothingSeen(t, seen, "b cut off a")

	// Healed.
	fb.SetCut(nil)
	if err := p.a.AppendEntries("b", bAddr, entries(p.a, 4), &resp); err != nil || !resp.Success {
		t.Fatalf("entries after the cut healed: %v %+v", err, resp)
	}
	<-seen
	pipe.Close()
	p.close()
}

func TestTransportFaultsLoseReply(t *testing.T) {
	defer checkGoroutines(t)()
	var fb FaultSet
	p := newFaultyPair(t, 2*time.Second, nil, &fb)
	seen, stop := serveAll(p.b)
	defer stop()
	bAddr := p.b.LocalAddr()
	fb.SetLoseReply(func(req *raft.AppendEntriesRequest) bool { return req.Term == 5 })

	var resp raft.AppendEntriesResponse
	err := p.a.AppendEntries("b", bAddr, entries(p.a, 5), &resp)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("a lost reply: %v", err)
	}
	// raft handled the request all the same.
	if got := (<-seen).(*raft.AppendEntriesRequest); got.Term != 5 {
		t.Fatalf("raft got term %d", got.Term)
	}
	if err := p.a.AppendEntries("b", bAddr, entries(p.a, 6), &resp); err != nil || !resp.Success || resp.Term != 6 {
		t.Fatalf("a reply that is not lost: %v %+v", err, resp)
	}
	<-seen
	p.close()
}

func TestTransportAppendEntriesRewrite(t *testing.T) {
	defer checkGoroutines(t)()
	p := newTransportPair(t, 2*time.Second)
	seen, stop := serveAll(p.b)
	defer stop()
	bAddr := p.b.LocalAddr()
	var calls atomic.Int32
	p.b.SetAppendEntriesRewrite(func(req *raft.AppendEntriesRequest) {
		calls.Add(1)
		req.PrevLogEntry, req.PrevLogTerm = 0, 0
	})

	var resp raft.AppendEntriesResponse
	if err := p.a.AppendEntries("b", bAddr, entries(p.a, 2), &resp); err != nil {
		t.Fatal(err)
	}
	if got := (<-seen).(*raft.AppendEntriesRequest); got.PrevLogEntry != 0 || got.PrevLogTerm != 0 || len(got.Entries) != 1 {
		t.Fatalf("raft got %+v, not the rewritten request", got)
	}
	// Pipelined requests are rewritten too.
	pipe, err := p.a.AppendEntriesPipeline("b", bAddr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pipe.AppendEntries(entries(p.a, 3), new(raft.AppendEntriesResponse)); err != nil {
		t.Fatal(err)
	}
	if f := <-pipe.Consumer(); f.Error() != nil {
		t.Fatal(f.Error())
	}
	if got := (<-seen).(*raft.AppendEntriesRequest); got.PrevLogEntry != 0 {
		t.Fatalf("raft got a pipelined %+v, not the rewritten request", got)
	}
	pipe.Close()
	if n := calls.Load(); n != 2 {
		t.Fatalf("rewrite called %d times, want 2", n)
	}

	p.b.SetAppendEntriesRewrite(nil)
	if err := p.a.AppendEntries("b", bAddr, entries(p.a, 4), &resp); err != nil {
		t.Fatal(err)
	}
	if got := (<-seen).(*raft.AppendEntriesRequest); got.PrevLogEntry != 4 || calls.Load() != 2 {
		t.Fatalf("after SetAppendEntriesRewrite(nil) raft got %+v", got)
	}
	p.close()
}

func TestTransportClusterID(t *testing.T) {
	defer checkGoroutines(t)()
	p := newTransportPair(t, 2*time.Second)
	seen, stop := serveAll(p.b)
	defer stop()
	bAddr := p.b.LocalAddr()
	var (
		mu        sync.Mutex
		adopted   []string
		failAdopt bool
	)
	setFail := func(fail bool) { mu.Lock(); failAdopt = fail; mu.Unlock() }
	adoptedIDs := func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(adopted) }
	p.a.SetCluster("group-a", nil)
	p.b.SetCluster("", func(id string) error {
		mu.Lock()
		defer mu.Unlock()
		if failAdopt {
			return errors.New("disk full")
		}
		adopted = append(adopted, id)
		return nil
	})
	if got := p.a.ClusterID(); got != "group-a" {
		t.Fatalf("ClusterID %q", got)
	}

	// A vote request does not make b adopt a's group.
	var vote raft.RequestVoteResponse
	if err := p.a.RequestVote("b", bAddr, &raft.RequestVoteRequest{RPCHeader: header("a"), Term: 1}, &vote); err != nil {
		t.Fatal(err)
	}
	<-seen
	if got, ids := p.b.ClusterID(), adoptedIDs(); got != "" || len(ids) != 0 {
		t.Fatalf("b adopted %q (%v) from a vote request", got, ids)
	}

	// Entries do, unless storing the id fails.
	var resp raft.AppendEntriesResponse
	setFail(true)
	err := p.a.AppendEntries("b", bAddr, entries(p.a, 1), &resp)
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("entries whose cluster id cannot be stored: %v", err)
	}
	nothingSeen(t, seen, "adopt failed")
	if got := p.b.ClusterID(); got != "" {
		t.Fatalf("b took cluster id %q it could not store", got)
	}
	setFail(false)
	if err := p.a.AppendEntries("b", bAddr, entries(p.a, 1), &resp); err != nil {
		t.Fatal(err)
	}
	<-seen
	if got, ids := p.b.ClusterID(), adoptedIDs(); got != "group-a" || !slices.Equal(ids, []string{"group-a"}) {
		t.Fatalf("b's cluster id %q, adopted %v", got, ids)
	}

	// Another group is refused, whatever it sends; no group is accepted.
	p.a.SetCluster("group-x", nil)
	err = p.a.AppendEntries("b", bAddr, entries(p.a, 2), &resp)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "belongs to cluster group-a") {
		t.Fatalf("entries from another group: %v", err)
	}
	if err := p.a.RequestVote("b", bAddr, &raft.RequestVoteRequest{RPCHeader: header("a"), Term: 2}, &vote); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a vote request from another group: %v", err)
	}
	nothingSeen(t, seen, "another group")
	p.a.SetCluster("", nil)
	if err := p.a.RequestVote("b", bAddr, &raft.RequestVoteRequest{RPCHeader: header("a"), Term: 3}, &vote); err != nil {
		t.Fatalf("a vote request without a cluster id: %v", err)
	}
	<-seen
	p.close()
}

func TestTransportUnreachable(t *testing.T) {
	defer checkGoroutines(t)()
	p := newTransportPair(t, 300*time.Millisecond)
	bAddr := p.b.LocalAddr()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := raft.ServerAddress(l.Addr().String())
	l.Close()
	if got := p.a.Unreachable(); len(got) != 0 {
		t.Fatalf("unreachable at the start: %v", got)
	}

	var vote raft.RequestVoteResponse
	before := time.Now()
	if err := p.a.RequestVote("x", dead, &raft.RequestVoteRequest{Term: 1}, &vote); err == nil {
		t.Fatal("a call to a closed port succeeded")
	}
	// Nobody answers at b yet: its call times out.
	if err := p.a.RequestVote("b", bAddr, &raft.RequestVoteRequest{RPCHeader: header("a"), Term: 1}, &vote); err == nil {
		t.Fatal("a call nobody answered succeeded")
	}
	got := p.a.Unreachable()
	if len(got) != 2 {
		t.Fatalf("unreachable: %v, want %s and %s", got, dead, bAddr)
	}
	first := got[dead]
	if first.Err == nil || first.Since.Before(before) || first.Since.After(time.Now()) {
		t.Fatalf("%s: %+v", dead, first)
	}
	// A second failure keeps the start of the outage; the copy is ours.
	delete(got, dead)
	if err := p.a.RequestVote("x", dead, &raft.RequestVoteRequest{Term: 2}, &vote); err == nil {
		t.Fatal("a call to a closed port succeeded")
	}
	if again, ok := p.a.Unreachable()[dead]; !ok || !again.Since.Equal(first.Since) || again.Err == nil {
		t.Fatalf("%s after a second failure: %+v (first %+v)", dead, again, first)
	}

	// b answers again: it leaves the list.
	seen, stop := serveAll(p.b)
	defer stop()
	if err := p.a.RequestVote("b", bAddr, &raft.RequestVoteRequest{RPCHeader: header("a"), Term: 2}, &vote); err != nil {
		t.Fatal(err)
	}
	<-seen
	if got := p.a.Unreachable(); len(got) != 1 || got[dead].Err == nil {
		t.Fatalf("unreachable after b answered: %v", got)
	}
	p.close()
}
