package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
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
	// gencluster probe (the health check of an image without curl) says
	// the same, by exit code.
	if _, stderr, code := gencluster(t, "probe", "--http", h1); code != 1 || !strings.Contains(stderr, "no raft leader known") {
		t.Errorf("probe --http of a coordinator without a leader: exit %d, %q", code, stderr)
	}
	if out, stderr, code := gencluster(t, "probe", "--http", h1, "--live"); code != 0 || out != "ok\n" {
		t.Errorf("probe --http --live: exit %d, %q %q", code, out, stderr)
	}

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
	for _, args := range [][]string{{"--http", h1}, {"--http", hw}, {"--grpc", a1}} {
		if out, stderr, code := gencluster(t, append([]string{"probe"}, args...)...); code != 0 || out != "ok\n" {
			t.Errorf("probe %v: exit %d, %q %q", args, code, out, stderr)
		}
	}
	if _, stderr, code := gencluster(t, "probe", "--grpc", a3); code != 1 || !strings.Contains(stderr, a3) {
		t.Errorf("probe --grpc of a coordinator not running: exit %d, %q", code, stderr)
	}
	healthProbe(t, a1, true)
	healthProbe(t, a3, false)
}

// healthProbe runs the real grpc-health-probe client (installed by .ci/run
// with go install; the test says so and skips where it is not) against
// addr and checks its verdict.
func healthProbe(t *testing.T, addr string, serving bool) {
	t.Helper()
	bin, err := exec.LookPath("grpc-health-probe")
	if err != nil {
		gopath, gerr := exec.Command("go", "env", "GOPATH").Output()
		if gerr != nil {
			t.Skipf("grpc-health-probe: not on PATH and no go env GOPATH (%v); install it with go install github.com/grpc-ecosystem/grpc-health-probe@v0.4.62", gerr)
		}
		bin = filepath.Join(strings.TrimSpace(string(gopath)), "bin", "grpc-health-probe")
		if _, err := os.Stat(bin); err != nil {
			t.Skipf("grpc-health-probe: not installed (%v); install it with go install github.com/grpc-ecosystem/grpc-health-probe@v0.4.62", err)
		}
	}
	out, err := exec.Command(bin, "-addr", addr, "-connect-timeout", "3s", "-rpc-timeout", "3s").CombinedOutput()
	if serving && (err != nil || !strings.Contains(string(out), "SERVING")) {
		t.Errorf("grpc-health-probe -addr %s: %v: %s", addr, err, out)
	}
	if !serving && err == nil {
		t.Errorf("grpc-health-probe -addr %s (not running) succeeded: %s", addr, out)
	}
}

// A worker whose --advertise address the coordinators cannot dial (a name
// that does not resolve, a port nobody serves) is not admitted: its
// /readyz and log name the address and why, within a bounded time, and it
// keeps trying instead of exiting (a name may be published late).
func TestUnreachableAdvertiseNamed(t *testing.T) {
	dir := t.TempDir()
	a1, h1 := freeAddr(t), freeAddr(t)
	startProc(t, "coordinator c1", "coordinator", "--id", "c1", "--listen", a1, "--peers", "c1="+a1,
		"--data-dir", filepath.Join(dir, "c1"), "--http", h1)
	awaitHTTP(t, "http://"+h1+"/readyz", 200, "ok")
	for i, c := range []struct{ advertise, why string }{
		{"nosuchhost.invalid:7100", `host "nosuchhost.invalid" does not resolve`},
		{"127.0.0.1:1", "connection refused"},
	} {
		hw := freeAddr(t)
		w := startProc(t, "worker "+c.advertise, "worker", "--join", a1, "--listen", "127.0.0.1:0", "--advertise", c.advertise,
			"--data-dir", filepath.Join(dir, fmt.Sprint("w", i)), "--threads", "1", "--http", hw)
		want := "advertises " + c.advertise + ", which coordinator c1 cannot reach: "
		body := awaitHTTP(t, "http://"+hw+"/readyz", 503, want)
		if !strings.Contains(body, c.why) {
			t.Errorf("worker advertising %s: /readyz %q does not say %q", c.advertise, body, c.why)
		}
		if !strings.Contains(w.log.String(), want) {
			t.Errorf("worker advertising %s: its log does not say %q:\n%s", c.advertise, want, w.log.String())
		}
		select {
		case <-w.done:
			t.Errorf("worker advertising %s exited instead of retrying:\n%s", c.advertise, w.log.String())
		default:
		}
	}
	// No worker was admitted.
	stdout, stderr, code := gencluster(t, "status", "--coordinator", a1, "--json")
	if code != 0 || !strings.Contains(stdout, `"workers": []`) {
		t.Errorf("status: exit %d, %s%s; want no workers", code, stdout, stderr)
	}
}

// A coordinator that cannot reach its raft peers says which and why: its
// /readyz names each peer it failed to reach (a host that does not
// resolve said so), and its log has one line per unreachable peer.
func TestUnreachablePeerNamed(t *testing.T) {
	a1, a3, h1 := freeAddr(t), freeAddr(t), freeAddr(t)
	c1 := startProc(t, "coordinator c1", "coordinator", "--id", "c1", "--listen", a1,
		"--peers", "c1="+a1+",c2=nosuchhost.invalid:7000,c3="+a3, "--data-dir", t.TempDir(), "--http", h1)
	body := awaitHTTP(t, "http://"+h1+"/readyz", 503, "cannot reach")
	for _, want := range []string{`nosuchhost.invalid:7000 for `, `host "nosuchhost.invalid" does not resolve`, a3 + " for ", "connection refused"} {
		if !strings.Contains(body, want) {
			t.Errorf("/readyz %q does not say %q", body, want)
		}
	}
	for _, peer := range []string{"nosuchhost.invalid:7000", a3} {
		if n := strings.Count(c1.log.String(), `msg="raft peer unreachable" peer=`+peer); n != 1 {
			t.Errorf("log has %d lines saying %s is unreachable, want 1:\n%s", n, peer, c1.log.String())
		}
	}
}
