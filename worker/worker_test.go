package worker

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// TestLoadID: a data dir keeps its worker id across restarts; a damaged id
// file is an error naming it, not a new identity.
func TestLoadID(t *testing.T) {
	dir := t.TempDir()
	a, err := loadID(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := loadID(dir)
	if err != nil || a != b {
		t.Fatalf("second start got id %q (%v), first %q", b, err, a)
	}
	other, err := loadID(t.TempDir())
	if err != nil || other == a {
		t.Fatalf("another data dir got id %q (%v), the same as %q", other, err, a)
	}
	if err := os.WriteFile(filepath.Join(dir, "worker-id"), []byte("  \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadID(dir); err == nil || !strings.Contains(err.Error(), "worker-id") {
		t.Errorf("blank id file: %v", err)
	}
}

func TestAdvertised(t *testing.T) {
	got, err := advertised(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7100})
	if err != nil || got != "127.0.0.1:7100" {
		t.Errorf("loopback listener advertised as %q, %v", got, err)
	}
	host, _ := os.Hostname()
	got, err = advertised(&net.TCPAddr{IP: net.IPv4zero, Port: 7100})
	if err != nil || got != net.JoinHostPort(host, "7100") {
		t.Errorf("all-interfaces listener advertised as %q, %v; want the host name %q", got, err, host)
	}
}

func TestNewBadConfig(t *testing.T) {
	if _, err := New(Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "--join") {
		t.Errorf("no coordinators: %v", err)
	}
	if _, err := New(Config{Coordinators: []string{"127.0.0.1:1"}, Listen: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "--data-dir") {
		t.Errorf("no data dir: %v", err)
	}
	if _, err := New(Config{Coordinators: []string{"127.0.0.1:1"}, DataDir: t.TempDir(), Listen: "nonsense"}); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("bad listen address: %v", err)
	}
}

// TestDataDirLocked: a second worker on the same data dir is refused with a
// clear error while the first runs, and starts once the first has closed.
func TestDataDirLocked(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Coordinators: []string{"127.0.0.1:1"}, DataDir: dir, Listen: "127.0.0.1:0"}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg); !errors.Is(err, ErrDataDirInUse) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second worker on the data dir: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	if b.ID() != a.ID() {
		t.Errorf("id changed across restarts: %s, %s", a.ID(), b.ID())
	}
	b.Abort()
	c, err := New(cfg) // an aborted (killed) worker's lock is gone too
	if err != nil {
		t.Fatalf("after the second was aborted: %v", err)
	}
	c.Close()
}

// TestSecretKept: the secret issued at the first join is kept in the data
// dir, readable by its owner only, and presented at the next start, which
// takes over the registration from a new address at once.
func TestSecretKept(t *testing.T) {
	coord, cl := startCoordinator(t)
	dir := t.TempDir()
	cfg := Config{Coordinators: []string{coord}, DataDir: dir, Listen: "127.0.0.1:0", Logger: testLogger()}
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := w.join(ctx, true); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, secretFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v, %v", fi, err)
	}
	first := w.Addr()
	w.Abort() // killed: still registered at its old address
	w2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if w2.Addr() == first {
		t.Fatalf("restarted on the same port %s", first)
	}
	start := time.Now()
	if err := w2.join(ctx, true); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("re-registering at the new address took %v (waited for the old lease?)", d)
	}
	st, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.GetWorkers()) != 1 || st.GetWorkers()[0].GetAddr() != w2.Addr() || st.GetWorkers()[0].GetId() != w.ID() {
		t.Fatalf("workers after the restart: %v", st.GetWorkers())
	}
	// Another data dir claiming the id without the secret is refused.
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, idFile), []byte(w.ID()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other, secretFile), []byte("guess\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w3, err := New(Config{Coordinators: []string{coord}, DataDir: other, Listen: "127.0.0.1:0", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer w3.Close()
	if err := w3.join(ctx, true); err == nil || !strings.Contains(err.Error(), "secret") {
		t.Fatalf("a stranger with a wrong secret joined: %v", err)
	}
}

// syncLog is a log sink safe for concurrent writes and reads.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestJoinSaysWhenNobodyAnswers: a worker whose --join addresses never
// answer says so in its log within seconds, and keeps trying until
// stopped.
func TestJoinSaysWhenNobodyAnswers(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	var log syncLog
	w, err := New(Config{Coordinators: []string{dead}, DataDir: t.TempDir(), Listen: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), joinAttempt+time.Second)
	defer cancel()
	err = w.join(ctx, true)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("join returned %v before it was stopped", err)
	}
	if s := log.String(); !strings.Contains(s, "not joined yet; still trying") || !strings.Contains(s, dead) {
		t.Fatalf("log does not say that %s does not answer:\n%s", dead, s)
	}
}

// TestAssignmentNeverGoesBack: an assignment of an older generation (from
// a coordinator that has not learnt it lost leadership) is ignored.
func TestAssignmentNeverGoesBack(t *testing.T) {
	w := &Worker{changed: make(chan struct{}, 1)}
	w.setAssignment(&pb.Assignment{JobId: "job-1", Generation: 5})
	w.setAssignment(&pb.Assignment{JobId: "job-1", Generation: 4})
	if g := w.assign.Load().GetGeneration(); g != 5 {
		t.Fatalf("generation went back to %d", g)
	}
	w.setAssignment(&pb.Assignment{JobId: "job-1", Generation: 5, WaitReason: "waiting for w-2"})
	if w.assign.Load().GetWaitReason() == "" {
		t.Fatal("a change within the generation (a hold) was dropped")
	}
	w.setAssignment(&pb.Assignment{JobId: "job-2", Generation: 6})
	if w.assign.Load().GetJobId() != "job-2" {
		t.Fatal("a newer generation was dropped")
	}
}
