package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// httpGet returns the status and body of GET url ("" and -1 if it cannot
// connect).
func httpGet(url string) (int, string) {
	c := http.Client{Timeout: 2 * time.Second}
	res, err := c.Get(url)
	if err != nil {
		return -1, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// awaitHTTP polls url until it answers want (or fails the test).
func awaitHTTP(t *testing.T, url string, want int, contains string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := httpGet(url)
		if code == want && strings.Contains(body, contains) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d %q, want %d with %q", url, code, body, want, contains)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// --http serves /livez and /readyz on coordinators and workers, and the
// coordinator's gRPC port serves grpc.health.v1. Readiness follows the
// process: a coordinator alone of a group of three has no leader (503, and
// why) until a second one starts; a worker is not ready before it has
// joined.
func TestHealthEndpoints(t *testing.T) {
	dir := t.TempDir()
	a1, a2, a3 := freeAddr(t), freeAddr(t), freeAddr(t)
	h1, h2, hw := freeAddr(t), freeAddr(t), freeAddr(t)
	peers := fmt.Sprintf("c1=%s,c2=%s,c3=%s", a1, a2, a3)
	startProc(t, "coordinator c1", "coordinator", "--id", "c1", "--listen", a1, "--peers", peers,
		"--data-dir", filepath.Join(dir, "c1"), "--http", h1)
	awaitHTTP(t, "http://"+h1+"/livez", 200, "ok")
	awaitHTTP(t, "http://"+h1+"/readyz", 503, "no raft leader known")

	// The worker cannot join yet: alive, not ready.
	startProc(t, "worker", "worker", "--join", a1+","+a2, "--listen", "127.0.0.1:0",
		"--data-dir", filepath.Join(dir, "w"), "--threads", "1", "--http", hw)
	awaitHTTP(t, "http://"+hw+"/livez", 200, "ok")
	awaitHTTP(t, "http://"+hw+"/readyz", 503, "not joined yet")

	startProc(t, "coordinator c2", "coordinator", "--id", "c2", "--listen", a2, "--peers", peers,
		"--data-dir", filepath.Join(dir, "c2"), "--http", h2)
	awaitHTTP(t, "http://"+h1+"/readyz", 200, "ok")
	awaitHTTP(t, "http://"+h2+"/readyz", 200, "ok")
	awaitHTTP(t, "http://"+hw+"/readyz", 200, "ok")

	conn, err := grpc.NewClient(a1, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("grpc health of c1: %v %v", r, err)
	}
}
