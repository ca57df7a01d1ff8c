package rafttransport

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

func header(id string) raft.RPCHeader {
	return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: []byte(id + ".example:7000")}
}

func sampleAppendEntries() *raft.AppendEntriesRequest {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	return &raft.AppendEntriesRequest{
		RPCHeader:    header("c1"),
		Term:         7,
		Leader:       []byte("c1.example:7000"),
		PrevLogEntry: 41,
		PrevLogTerm:  6,
		Entries: []*raft.Log{
			{Index: 42, Term: 7, Type: raft.LogCommand, Data: []byte("k=v"), Extensions: []byte("ext"), AppendedAt: at},
			{Index: 43, Term: 7, Type: raft.LogNoop},
			{Index: 44, Term: 7, Type: raft.LogBarrier, AppendedAt: at.Add(time.Second)},
			{Index: 45, Term: 7, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(raft.Configuration{
				Servers: []raft.Server{{Suffrage: raft.Voter, ID: "c1", Address: "c1.example:7000"}}})},
			{Index: 46, Term: 7, Type: raft.LogAddPeerDeprecated, Data: []byte{1}},
			{Index: 47, Term: 7, Type: raft.LogRemovePeerDeprecated, Data: []byte{2}},
		},
		LeaderCommitIndex: 40,
	}
}

// wire sends m through protobuf's encoding, as gRPC would.
func wire[M proto.Message](t *testing.T, m M) M {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out := m.ProtoReflect().New().Interface().(M)
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func same(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s round trip:\n got %+v\nwant %+v", what, got, want)
	}
}

func TestTransportRoundTrip(t *testing.T) {
	ae := sampleAppendEntries()
	got, err := appendEntriesRequestFromProto(wire(t, appendEntriesRequestToProto(ae)))
	if err != nil {
		t.Fatal(err)
	}
	same(t, "AppendEntriesRequest", got, ae)

	hb := &raft.AppendEntriesRequest{RPCHeader: header("c1"), Term: 3, Leader: []byte("c1.example:7000")}
	got, err = appendEntriesRequestFromProto(wire(t, appendEntriesRequestToProto(hb)))
	if err != nil {
		t.Fatal(err)
	}
	same(t, "heartbeat", got, hb)
	if !isHeartbeat(got) || isHeartbeat(ae) {
		t.Error("isHeartbeat")
	}

	aer := &raft.AppendEntriesResponse{RPCHeader: header("c2"), Term: 7, LastLog: 47, Success: true, NoRetryBackoff: true}
	same(t, "AppendEntriesResponse", appendEntriesResponseFromProto(wire(t, appendEntriesResponseToProto(aer))), *aer)

	rv := &raft.RequestVoteRequest{RPCHeader: header("c3"), Term: 9, Candidate: []byte("c3.example:7000"), LastLogIndex: 50, LastLogTerm: 8, LeadershipTransfer: true}
	same(t, "RequestVoteRequest", requestVoteRequestFromProto(wire(t, requestVoteRequestToProto(rv))), rv)
	rvr := &raft.RequestVoteResponse{RPCHeader: header("c1"), Term: 9, Peers: []byte("old"), Granted: true}
	same(t, "RequestVoteResponse", requestVoteResponseFromProto(wire(t, requestVoteResponseToProto(rvr))), *rvr)

	pv := &raft.RequestPreVoteRequest{RPCHeader: header("c3"), Term: 10, LastLogIndex: 51, LastLogTerm: 9}
	same(t, "RequestPreVoteRequest", requestPreVoteRequestFromProto(wire(t, requestPreVoteRequestToProto(pv))), pv)
	pvr := &raft.RequestPreVoteResponse{RPCHeader: header("c2"), Term: 10, Granted: true}
	same(t, "RequestPreVoteResponse", requestPreVoteResponseFromProto(wire(t, requestPreVoteResponseToProto(pvr))), *pvr)

	is := &raft.InstallSnapshotRequest{
		RPCHeader: header("c1"), SnapshotVersion: raft.SnapshotVersionMax, Term: 11, Leader: []byte("c1.example:7000"),
		LastLogIndex: 100, LastLogTerm: 10, Peers: []byte("p"),
		Configuration: raft.EncodeConfiguration(raft.Configuration{Servers: []raft.Server{
			{Suffrage: raft.Voter, ID: "c1", Address: "c1.example:7000"},
			{Suffrage: raft.Nonvoter, ID: "c4", Address: "c4.example:7000"},
		}}),
		ConfigurationIndex: 90, Size: 1 << 40,
	}
	same(t, "InstallSnapshotRequest", installSnapshotRequestFromProto(wire(t, installSnapshotRequestToProto(is))), is)

	// Every raft log type maps both ways; the unspecified one is refused.
	for lt := raft.LogCommand; lt <= raft.LogConfiguration; lt++ {
		back, err := logTypeFromProto(logTypeToProto(lt))
		if err != nil || back != lt {
			t.Errorf("log type %v: %v %v", lt, back, err)
		}
	}
	bad := appendEntriesRequestToProto(ae)
	bad.Entries[1].Type = pb.RaftLogType_RAFT_LOG_TYPE_UNSPECIFIED
	if _, err := appendEntriesRequestFromProto(bad); err == nil {
		t.Error("an entry of unspecified type was accepted")
	}
}

// transportPair is two transports, each on its own gRPC server; b's raft
// side is played by the test through b.Consumer().
type transportPair struct {
	a, b       *Transport
	srvA, srvB *grpc.Server
}

// newTransportPair starts a pair without injected faults, as in production.
func newTransportPair(t *testing.T, timeout time.Duration) *transportPair {
	t.Helper()
	return newFaultyPair(t, timeout, nil, nil)
}

// newFaultyPair starts a pair whose transports inject faultsA and faultsB.
func newFaultyPair(t *testing.T, timeout time.Duration, faultsA, faultsB Faults) *transportPair {
	t.Helper()
	p := &transportPair{}
	start := func(faults Faults) (*Transport, *grpc.Server) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		tr, err := New(Config{Addr: l.Addr().String(), Timeout: timeout, Logger: testLogger(t), Faults: faults}, srv)
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(l)
		return tr, srv
	}
	p.a, p.srvA = start(faultsA)
	p.b, p.srvB = start(faultsB)
	t.Cleanup(p.close)
	return p
}

func (p *transportPair) close() {
	p.a.Close()
	p.b.Close()
	p.srvA.Stop()
	p.srvB.Stop()
}

// serve answers the RPCs arriving at tr with answer until stop is closed;
// the commands it saw (and the snapshot data) go to seen.
func serve(tr *Transport, stop <-chan struct{}, seen chan<- any, answer func(raft.RPC) (any, error)) {
	for {
		select {
		case rpc := <-tr.Consumer():
			if rpc.Reader != nil {
				data, err := io.ReadAll(rpc.Reader)
				if err != nil {
					rpc.Respond(nil, err)
					continue
				}
				seen <- data
			}
			seen <- rpc.Command
			rpc.Respond(answer(rpc))
		case <-stop:
			return
		}
	}
}

func TestTransportRPCs(t *testing.T) {
	defer checkGoroutines(t)()
	p := newTransportPair(t, 2*time.Second)
	stop := make(chan struct{})
	seen := make(chan any, 16)
	served := make(chan struct{})
	go func() {
		defer close(served)
		serve(p.b, stop, seen, func(rpc raft.RPC) (any, error) {
			switch cmd := rpc.Command.(type) {
			case *raft.AppendEntriesRequest:
				if cmd.Term == 99 {
					return nil, errors.New("refused by raft")
				}
				return &raft.AppendEntriesResponse{RPCHeader: header("b"), Term: cmd.Term, LastLog: 47, Success: true}, nil
			case *raft.RequestVoteRequest:
				return &raft.RequestVoteResponse{RPCHeader: header("b"), Term: cmd.Term, Granted: true}, nil
			case *raft.RequestPreVoteRequest:
				return &raft.RequestPreVoteResponse{RPCHeader: header("b"), Term: cmd.Term, Granted: true}, nil
			case *raft.TimeoutNowRequest:
				return &raft.TimeoutNowResponse{RPCHeader: header("b")}, nil
			case *raft.InstallSnapshotRequest:
				return &raft.InstallSnapshotResponse{RPCHeader: header("b"), Term: cmd.Term, Success: true}, nil
			}
			return nil, errors.New("unexpected command")
		})
	}()
	target := p.b.LocalAddr()

	ae := sampleAppendEntries()
	var aer raft.AppendEntriesResponse
	if err := p.a.AppendEntries("b", target, ae, &aer); err != nil {
		t.Fatal(err)
	}
	same(t, "AppendEntries request", <-seen, ae)
	same(t, "AppendEntries response", aer, raft.AppendEntriesResponse{RPCHeader: header("b"), Term: 7, LastLog: 47, Success: true})

	// raft's error reaches the caller.
	bad := *ae
	bad.Term = 99
	if err := p.a.AppendEntries("b", target, &bad, &aer); err == nil {
		t.Fatal("raft's refusal was lost")
	} else {
		t.Logf("refused: %v", err)
	}
	<-seen

	rv := &raft.RequestVoteRequest{RPCHeader: header("a"), Term: 8, LastLogIndex: 3, LastLogTerm: 2}
	var rvr raft.RequestVoteResponse
	if err := p.a.RequestVote("b", target, rv, &rvr); err != nil {
		t.Fatal(err)
	}
	same(t, "RequestVote request", <-seen, rv)
	if !rvr.Granted || rvr.Term != 8 {
		t.Errorf("RequestVote response %+v", rvr)
	}

	pv := &raft.RequestPreVoteRequest{RPCHeader: header("a"), Term: 9, LastLogIndex: 3, LastLogTerm: 2}
	var pvr raft.RequestPreVoteResponse
	if err := p.a.RequestPreVote("b", target, pv, &pvr); err != nil {
		t.Fatal(err)
	}
	same(t, "RequestPreVote request", <-seen, pv)
	if !pvr.Granted || pvr.Term != 9 {
		t.Errorf("RequestPreVote response %+v", pvr)
	}

	tn := &raft.TimeoutNowRequest{RPCHeader: header("a")}
	var tnr raft.TimeoutNowResponse
	if err := p.a.TimeoutNow("b", target, tn, &tnr); err != nil {
		t.Fatal(err)
	}
	same(t, "TimeoutNow request", <-seen, tn)
	same(t, "TimeoutNow response", tnr, raft.TimeoutNowResponse{RPCHeader: header("b")})

	// A snapshot of several chunks, and an empty one.
	for _, size := range []int{3*snapshotChunkSize + 12345, 0} {
		data := make([]byte, size)
		rand.Read(data)
		is := &raft.InstallSnapshotRequest{RPCHeader: header("a"), SnapshotVersion: 1, Term: 10, LastLogIndex: 100, LastLogTerm: 9,
			Configuration: []byte("conf"), ConfigurationIndex: 90, Size: int64(size)}
		var isr raft.InstallSnapshotResponse
		if err := p.a.InstallSnapshot("b", target, is, &isr, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		if got := (<-seen).([]byte); !bytes.Equal(got, data) {
			t.Errorf("snapshot data: %d bytes arrived, %d sent", len(got), len(data))
		}
		same(t, "InstallSnapshot request", <-seen, is)
		if !isr.Success || isr.Term != 10 {
			t.Errorf("InstallSnapshot response %+v", isr)
		}
	}

	// A pipeline: responses come back in order.
	pipe, err := p.a.AppendEntriesPipeline("b", target)
	if err != nil {
		t.Fatal(err)
	}
	var futures []raft.AppendFuture
	for i := range 10 {
		req := &raft.AppendEntriesRequest{RPCHeader: header("a"), Term: uint64(i + 1), PrevLogEntry: uint64(i), Entries: []*raft.Log{{Index: uint64(i + 1), Term: 1, Data: []byte{byte(i)}}}}
		f, err := pipe.AppendEntries(req, new(raft.AppendEntriesResponse))
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	for i, want := range futures {
		got := <-pipe.Consumer()
		<-seen
		if got != want {
			t.Fatalf("pipeline future %d out of order", i)
		}
		if err := got.Error(); err != nil {
			t.Fatal(err)
		}
		if got.Response().Term != uint64(i+1) || !got.Response().Success {
			t.Errorf("pipeline response %d: %+v", i, got.Response())
		}
	}
	if err := pipe.Close(); err != nil {
		t.Fatal(err)
	}
	pipe.Close()

	close(stop)
	<-served
	p.close()
}

func TestTransportHeartbeatFastPath(t *testing.T) {
	defer checkGoroutines(t)()
	p := newTransportPair(t, 2*time.Second)
	got := make(chan *raft.AppendEntriesRequest, 1)
	p.b.SetHeartbeatHandler(func(rpc raft.RPC) {
		got <- rpc.Command.(*raft.AppendEntriesRequest)
		rpc.Respond(&raft.AppendEntriesResponse{Term: 5, Success: true}, nil)
	})
	hb := &raft.AppendEntriesRequest{RPCHeader: header("a"), Term: 5, Leader: []byte("a")}
	var resp raft.AppendEntriesResponse
	if err := p.a.AppendEntries("b", p.b.LocalAddr(), hb, &resp); err != nil {
		t.Fatal(err)
	}
	same(t, "heartbeat", <-got, hb)
	if !resp.Success {
		t.Errorf("heartbeat response %+v", resp)
	}
	p.close()
}

func TestTransportTimeoutsAndShutdown(t *testing.T) {
	defer checkGoroutines(t)()
	p := newTransportPair(t, 300*time.Millisecond)
	target := p.b.LocalAddr()
	// Nobody consumes at b: the call times out and b's handler lets go.
	start := time.Now()
	var resp raft.RequestVoteResponse
	err := p.a.RequestVote("b", target, &raft.RequestVoteRequest{RPCHeader: header("a"), Term: 1}, &resp)
	if err == nil {
		t.Fatal("a call nobody answered succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("timeout after %v", d)
	}
	t.Logf("unanswered: %v", err)

	// A snapshot nobody reads: InstallSnapshot times out too.
	err = p.a.InstallSnapshot("b", target, &raft.InstallSnapshotRequest{RPCHeader: header("a"), SnapshotVersion: 1, Size: 1 << 20},
		new(raft.InstallSnapshotResponse), bytes.NewReader(make([]byte, 1<<20)))
	if err == nil {
		t.Fatal("an unread snapshot was installed")
	}

	// An unreachable peer fails fast.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	if err := p.a.RequestVote("x", raft.ServerAddress(dead), &raft.RequestVoteRequest{Term: 1}, &resp); err == nil {
		t.Fatal("a call to a closed port succeeded")
	}

	// b shut down: its handlers answer Unavailable; a shut down: calls
	// fail at once with ErrTransportShutdown.
	p.b.Close()
	if err := p.a.RequestVote("b", target, &raft.RequestVoteRequest{RPCHeader: header("a"), Term: 1}, &resp); err == nil {
		t.Fatal("a call to a closed transport succeeded")
	}
	p.a.Close()
	if err := p.a.RequestVote("b", target, &raft.RequestVoteRequest{Term: 1}, &resp); !errors.Is(err, raft.ErrTransportShutdown) {
		t.Fatalf("call on a closed transport: %v", err)
	}
	if _, err := p.a.AppendEntriesPipeline("b", target); !errors.Is(err, raft.ErrTransportShutdown) {
		t.Fatalf("pipeline on a closed transport: %v", err)
	}
	if err := p.a.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	p.close()
}
