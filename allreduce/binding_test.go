package allreduce

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/trust"
)

// startTLSNodes starts members as workers holding only a join token do:
// servers with a throw-away self-signed certificate, dialled without
// verifying it, every ring key required.
func startTLSNodes(t *testing.T, n int, cfg Config) []*node {
	t.Helper()
	cfg.RequireKeys = true
	cfg.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(trust.UnverifiedClientTLS()))}
	return startNodes(t, n, cfg, grpc.Creds(credentials.NewTLS(selfSigned(t))))
}

func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	c, err := trust.SelfSignedServerTLS("test worker")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// keys of rank i in a ring of n: what the coordinators hand out.
func keysOf(i, n int) (send, recv, accept, nextAccept []byte) {
	k := func(kind string, r int) []byte {
		return []byte(fmt.Sprintf("%s key of rank %d, 32 bytes long", kind, r))
	}
	return k("send", i), k("send", (i+n-1)%n), k("accept", i), k("accept", (i+1)%n)
}

func ringWithKeys(job string, gen uint64, rank int, addrs []string) Ring {
	s, r, a, na := keysOf(rank, len(addrs))
	return Ring{JobID: job, Generation: gen, Rank: rank, Addrs: addrs, SendKey: s, RecvKey: r, AcceptKey: a, NextAcceptKey: na}
}

// relay is a man in the middle on the ring: a TLS server that takes the
// first frame of every stream it is sent and hands it to got.
type relay struct {
	pb.UnimplementedAllReduceRingServer
	got chan *pb.RingFrame
}

func (r *relay) Push(stream pb.AllReduceRing_PushServer) error {
	f, err := stream.Recv()
	if err != nil {
		return err
	}
	r.got <- f
	// It cannot sign the successor's answer; it tries a made-up one.
	if err := stream.SendHeader(metadata.Pairs(acceptHeader, strings.Repeat("ab", 32))); err != nil {
		return err
	}
	<-stream.Context().Done()
	return stream.Context().Err()
}

// Over TLS with every key, a ring sums as before; a relay placed between a
// sender and its successor learns nothing it can use: the sender stops at
// the hello (no accept answer, nothing else is sent), and the hello it
// captured is refused by the real successor, because it was signed over
// the relay's connection, not the successor's.
func TestHelloBoundToConnection(t *testing.T) {
	nodes := startTLSNodes(t, 3, Config{Timeout: 2 * time.Second})
	addrs := []string{nodes[0].addr, nodes[1].addr, nodes[2].addr}
	for i, nd := range nodes {
		g, err := nd.m.SetRing(ringWithKeys("job", 1, i, addrs))
		if err != nil {
			t.Fatal(err)
		}
		nd.g = g
	}
	bufs, want := inputs(3, 1000, 7)
	for _, err := range allReduce(nodes, bufs) {
		if err != nil {
			t.Fatal(err)
		}
	}
	checkSum(t, bufs, want)

	// A ring without keys is refused by a member that requires them.
	if _, err := nodes[0].m.SetRing(Ring{JobID: "job", Generation: 2, Rank: 0, Addrs: addrs}); err == nil || !strings.Contains(err.Error(), "lacks ring keys") {
		t.Errorf("SetRing without keys: %v, want refused", err)
	}

	// Generation 2 of a 2-ring: sender (rank 0) -> relay -> victim (rank 1).
	sender := startTLSNodes(t, 1, Config{Timeout: 2 * time.Second})[0]
	victim := startTLSNodes(t, 1, Config{Timeout: 2 * time.Second})[0]
	rl := &relay{got: make(chan *pb.RingFrame, 1)}
	rsrv := grpc.NewServer(grpc.Creds(credentials.NewTLS(selfSigned(t))))
	pb.RegisterAllReduceRingServer(rsrv, rl)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go rsrv.Serve(lis)
	t.Cleanup(rsrv.Stop)

	// SetRing starts the sender's stream to its successor at once, so its
	// refusal may come before SetRing returns: count from before it.
	before := sender.m.Refused()
	gs, err := sender.m.SetRing(ringWithKeys("job", 2, 0, []string{sender.addr, lis.Addr().String()}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := victim.m.SetRing(ringWithKeys("job", 2, 1, []string{sender.addr, victim.addr})); err != nil {
		t.Fatal(err)
	}
	op := gs.Start(context.Background(), make([]float32, 64))
	var hello *pb.RingFrame
	select {
	case hello = <-rl.got:
	case <-time.After(5 * time.Second):
		t.Fatal("the sender never sent its hello to the relay")
	}
	if len(hello.Mac) == 0 {
		t.Fatal("the hello is not signed")
	}
	if err := op.Wait(); !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), "accept key") {
		t.Errorf("sender via a relay: %v, want ErrFenced naming the accept key", err)
	}
	// At least the relay's answer; the victim's own stream to the sender
	// (its successor) may be refused too, once the sender's generation has
	// failed.
	if got := sender.m.Refused(); got < before+1 {
		t.Errorf("sender's refused count %d, want at least %d", got, before+1)
	}

	// The relay passes the captured hello on, over its own connection.
	conn, err := grpc.NewClient(victim.addr, grpc.WithTransportCredentials(credentials.NewTLS(trust.UnverifiedClientTLS())))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	before = victim.m.Refused()
	stream, err := pb.NewAllReduceRingClient(conn).Push(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(hello); err != nil {
		t.Fatal(err)
	}
	_, err = stream.CloseAndRecv()
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "over this connection") {
		t.Errorf("relayed hello: %v, want FailedPrecondition: not signed over this connection", err)
	}
	if victim.m.Refused() != before+1 {
		t.Errorf("victim's refused count %d, want %d", victim.m.Refused(), before+1)
	}
}
