package trust

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"maps"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

const (
	methodCheck = "/grpc.health.v1.Health/Check"
	methodWatch = "/grpc.health.v1.Health/Watch"
	methodList  = "/grpc.health.v1.Health/List"
)

// guardedServer runs a health server with coordinator credentials and a
// guard enforcing policy; it returns the address, the guard and its log.
func guardedServer(t *testing.T, dir string, policy Policy, extra ...grpc.ServerOption) (string, *Guard, *syncBuffer) {
	t.Helper()
	log, buf := testLogger()
	g := NewGuard(policy, nil, log)
	srv := mustLoad(t, filepath.Join(dir, "coordinator"), nil)
	opts := append([]grpc.ServerOption{
		srv.ServerOption(),
		grpc.ChainUnaryInterceptor(g.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(g.StreamInterceptor()),
	}, extra...)
	return startGRPC(t, opts...), g, buf
}

func wantStatus(t *testing.T, err error, code codes.Code, parts ...string) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Fatalf("status %v (%v), want %v", got, err, code)
	}
	for _, p := range parts {
		if !strings.Contains(status.Convert(err).Message(), p) {
			t.Errorf("message %q does not contain %q", status.Convert(err).Message(), p)
		}
	}
}

// TestGuardUnary checks per-method role enforcement on unary calls,
// default deny, the refusal log and the counters.
func TestGuardUnary(t *testing.T) {
	dir := newPKI(t)
	policy := Policy{methodCheck: {Coordinator}}
	addr, g, logs := guardedServer(t, dir, policy)
	policy[methodCheck] = append(policy[methodCheck], Worker) // NewGuard copied the policy

	worker := mustLoad(t, filepath.Join(dir, "worker"), nil)
	coord := mustLoad(t, filepath.Join(dir, "coordinator"), nil)
	wc := dialHealth(t, addr, worker.DialOption(Coordinator))
	cc := dialHealth(t, addr, coord.DialOption(Coordinator))

	// A worker calling a coordinator-only method.
	wantStatus(t, callCheck(wc), codes.PermissionDenied, methodCheck, "role worker", "allowed roles: coordinator")
	wantStatus(t, callCheck(wc), codes.PermissionDenied)

	// The allowed role passes.
	if err := callCheck(cc); err != nil {
		t.Fatalf("coordinator Check: %v", err)
	}

	// A method not in the policy is refused to everyone.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := cc.List(ctx, &healthpb.HealthListRequest{})
	wantStatus(t, err, codes.PermissionDenied, methodList, "role coordinator", "not in the policy")

	// Methods the policy does not name are counted under one key: a
	// caller chooses those names.
	want := map[string]uint64{methodCheck: 2, UnknownMethod: 1}
	if got := g.Refused(); !maps.Equal(got, want) {
		t.Errorf("Refused() = %v, want %v", got, want)
	}
	snap := g.Refused()
	snap[methodCheck] = 100
	if g.Refused()[methodCheck] != 2 {
		t.Error("Refused() returned the guard's own map")
	}

	out := logs.String()
	if n := strings.Count(out, "level=WARN"); n != 3 {
		t.Errorf("%d warnings logged, want 3:\n%s", n, out)
	}
	for _, p := range []string{"call refused", "method=" + methodCheck, "peer=127.0.0.1:", "role=worker", "allowed=coordinator"} {
		if !strings.Contains(out, p) {
			t.Errorf("log lacks %q:\n%s", p, out)
		}
	}
}

// TestGuardStream checks the stream interceptor with Health/Watch.
func TestGuardStream(t *testing.T) {
	dir := newPKI(t)
	addr, g, _ := guardedServer(t, dir, Policy{methodWatch: {Client, Coordinator}})
	worker := mustLoad(t, filepath.Join(dir, "worker"), nil)
	client := mustLoad(t, filepath.Join(dir, "client"), nil)

	watch := func(c healthpb.HealthClient) (*healthpb.HealthCheckResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stream, err := c.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return nil, err
		}
		return stream.Recv()
	}

	_, err := watch(dialHealth(t, addr, worker.DialOption(Coordinator)))
	wantStatus(t, err, codes.PermissionDenied, methodWatch, "role worker", "allowed roles: client, coordinator")

	resp, err := watch(dialHealth(t, addr, client.DialOption(Coordinator)))
	if err != nil {
		t.Fatalf("client Watch: %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("Watch status %v", resp.GetStatus())
	}
	if got := g.Refused(); !maps.Equal(got, map[string]uint64{methodWatch: 1}) {
		t.Errorf("Refused() = %v", got)
	}
}

// TestGuardIdentity checks that handlers behind the guard see the caller's
// identity from its certificate.
func TestGuardIdentity(t *testing.T) {
	dir := newPKI(t)
	var (
		mu  sync.Mutex
		ids []Identity
	)
	capture := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		id, err := PeerIdentity(ctx)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		ids = append(ids, id)
		mu.Unlock()
		return h(ctx, req)
	}
	addr, _, _ := guardedServer(t, dir, Policy{methodCheck: {Worker}}, grpc.ChainUnaryInterceptor(capture))

	folder := filepath.Join(t.TempDir(), "w7")
	if err := Issue(dir, Worker, []string{"worker-7"}, folder, IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	worker := mustLoad(t, folder, nil)
	if err := callCheck(dialHealth(t, addr, worker.DialOption(Coordinator))); err != nil {
		t.Fatal(err)
	}
	leaf := readLeaf(t, filepath.Join(folder, CertFile))
	want := Identity{Role: Worker, Name: "worker-7", Serial: leaf.SerialNumber.Text(16)}
	mu.Lock()
	defer mu.Unlock()
	if len(ids) != 1 || ids[0] != want {
		t.Errorf("identities %+v, want [%+v]", ids, want)
	}
}

// TestGuardWithoutTLS checks that calls without a verified TLS peer are
// refused as Unauthenticated and counted.
func TestGuardWithoutTLS(t *testing.T) {
	log, buf := testLogger()
	g := NewGuard(Policy{methodCheck: {Client}}, nil, log)
	addr := startGRPC(t, grpc.UnaryInterceptor(g.UnaryInterceptor()))
	err := callCheck(dialHealth(t, addr, grpc.WithTransportCredentials(insecure.NewCredentials())))
	wantStatus(t, err, codes.Unauthenticated, "did not connect over TLS")
	if got := g.Refused()[methodCheck]; got != 1 {
		t.Errorf("refused count %d, want 1", got)
	}
	if !strings.Contains(buf.String(), "code=Unauthenticated") {
		t.Errorf("refusal not logged: %s", buf.String())
	}
}

func TestPeerIdentityErrors(t *testing.T) {
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	cases := map[string]context.Context{
		"no peer":      context.Background(),
		"no TLS":       peer.NewContext(context.Background(), &peer.Peer{Addr: addr}),
		"unverified":   peer.NewContext(context.Background(), &peer.Peer{Addr: addr, AuthInfo: credentials.TLSInfo{}}),
		"no role":      peerWithCert(&x509.Certificate{}),
		"unknown role": peerWithCert(&x509.Certificate{URIs: []*url.URL{Role("root").uri()}}),
	}
	for name, ctx := range cases {
		if _, err := PeerIdentity(ctx); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v, want Unauthenticated", name, err)
		}
	}
	id, err := PeerIdentity(peerWithCert(&x509.Certificate{URIs: []*url.URL{Client.uri()}}))
	if err != nil || id.Role != Client {
		t.Errorf("PeerIdentity = %+v, %v", id, err)
	}
}

// peerWithCert returns a context whose peer has cert as verified client
// certificate.
func peerWithCert(cert *x509.Certificate) context.Context {
	info := credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}}
	return peer.NewContext(context.Background(), &peer.Peer{
		Addr:     &net.TCPAddr{IP: net.IPv4(10, 0, 0, 9), Port: 4242},
		AuthInfo: info,
	})
}

// TestGuardConcurrent exercises the counters from many goroutines (run with
// -race).
func TestGuardConcurrent(t *testing.T) {
	g := NewGuard(Policy{methodCheck: {Coordinator}, "/bad": {Role("nonsense")}}, nil, nil)
	ctx := peerWithCert(&x509.Certificate{URIs: []*url.URL{Worker.uri()}})
	okCtx := peerWithCert(&x509.Certificate{URIs: []*url.URL{Coordinator.uri()}})
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				g.authorize(ctx, methodCheck)
				if err := g.authorize(okCtx, methodCheck); err != nil {
					t.Error(err)
					return
				}
				g.authorize(okCtx, "/bad")
				_ = g.Refused()
			}
		}()
	}
	wg.Wait()
	if got := g.Refused(); got[methodCheck] != 1600 || got["/bad"] != 1600 {
		t.Errorf("Refused() = %v, want 1600 each", got)
	}
}
