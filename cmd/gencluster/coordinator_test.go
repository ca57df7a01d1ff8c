package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// freeAddr returns a loopback address whose port was free a moment ago.
// The port lies below the kernel's ephemeral range, so a socket another
// test binary opens on port 0 in the meantime cannot take it; and this
// binary never hands out the same port twice, so a port a stopped process
// held is not reused while its peers may still dial it.
func freeAddr(t *testing.T) string {
	t.Helper()
	return testPorts.addr(t)
}

// portPicker hands out loopback ports below the ephemeral range.
type portPicker struct {
	mu   sync.Mutex
	used map[int]bool
}

var testPorts = &portPicker{used: map[int]bool{}}

func (p *portPicker) addr(t *testing.T) string {
	t.Helper()
	lo, hi := 10000, ephemeralLow()
	p.mu.Lock()
	defer p.mu.Unlock()
	for range 200 {
		if hi-lo < 1000 {
			break // no room below the ephemeral range: fall back to port 0
		}
		port := lo + rand.IntN(hi-lo)
		if p.used[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		p.used[port] = true
		return l.Addr().String()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// where it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}

// syncBuffer is a bytes.Buffer safe for a command writing while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startCoordinator runs `gencluster coordinator args...` until the test ends.
func startCoordinator(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, append([]string{"coordinator", "--log-level", "warn"}, args...), &out, &errb) }()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("coordinator %v exited %d: %s", args, code, errb.String())
			}
		case <-time.After(15 * time.Second):
			t.Errorf("coordinator %v did not stop", args)
		}
	})
}

// TestCoordinatorJoinAtRunTime: a single coordinator is a valid cluster; a
// second one joins it with --join; status through either shows both, and a
// submitted job, with the JSON fields of docs/CLI.md.
func TestCoordinatorJoinAtRunTime(t *testing.T) {
	a1, a2 := freeAddr(t), freeAddr(t)
	dir := t.TempDir()
	startCoordinator(t, "--id", "c1", "--listen", a1, "--peers", "c1="+a1, "--data-dir", filepath.Join(dir, "c1"))
	out, errs, code := gencluster(t, "submit", "--coordinator", a1, "--model", "vae", "--steps", "50", "--batch", "32")
	if code != 0 {
		t.Fatalf("submit: %s", errs)
	}
	jobID := string(bytes.TrimSpace([]byte(out)))
	startCoordinator(t, "--id", "c2", "--listen", a2, "--join", a1, "--data-dir", filepath.Join(dir, "c2"))

	var st statusJSON
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, errs, code = gencluster(t, "status", "--coordinator", a2, "--json", "--timeout", "2s")
		if code == 0 {
			st = statusJSON{}
			if err := json.Unmarshal([]byte(out), &st); err != nil {
				t.Fatalf("status --json: %v in %q", err, out)
			}
			if len(st.Coordinators) == 2 && st.Job != nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("status through the joined coordinator: code %d, %s %s", code, out, errs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st.Leader != a1 || st.Job.ID != jobID || st.Job.Model != "vae" || st.Job.TotalSteps != 50 || st.Job.State != "waiting" {
		t.Fatalf("status: %+v, job %+v", st, st.Job)
	}
	var raw map[string]any
	json.Unmarshal([]byte(out), &raw)
	for _, k := range []string{"leader", "coordinators", "workers", "job", "last_checkpoint"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("status --json lacks %q", k)
		}
	}
	if out, errs, code = gencluster(t, "coordinator", "remove", "--coordinator", a2, "--id", "c2"); code != 0 || !bytes.Contains([]byte(out), []byte("removed coordinator c2")) {
		t.Fatalf("coordinator remove: %d %s %s", code, out, errs)
	}
	out, errs, code = gencluster(t, "status", "--coordinator", a1, "--json")
	st = statusJSON{}
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || len(st.Coordinators) != 1 {
		t.Fatalf("status after removing c2: %d %s %s", code, out, errs)
	}
	if _, errs, code = gencluster(t, "coordinator", "--id", "c3", "--listen", freeAddr(t), "--join", a1, "--peers", fmt.Sprintf("c1=%s", a1), "--data-dir", t.TempDir()); code == 0 {
		t.Fatal("--join with --peers accepted")
	}
}

// status --watch redraws in place on a terminal (the screen cleared before
// each view) and prints views one after the other, marked, elsewhere; it
// stops when interrupted.
func TestStatusWatch(t *testing.T) {
	c := newTestCluster(t, 1, 0)
	c.waitWorkers(c.client(), 0)
	for _, tty := range []bool{true, false} {
		out := &syncBuffer{}
		a := &app{stdout: out, stderr: &syncBuffer{}, tty: tty}
		root := a.rootCommand()
		root.SetArgs([]string{"status", "--coordinator", c.coords[0], "--watch", "--every", "100ms"})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- root.ExecuteContext(ctx) }()
		mark := "\n--- "
		if tty {
			mark = clearScreen
		}
		deadline := time.Now().Add(30 * time.Second)
		for strings.Count(out.String(), mark) < 3 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("tty %v: status --watch ended with %v", tty, err)
		}
		s := out.String()
		if n := strings.Count(s, mark); n < 3 || strings.Count(s, "leader: ") < 3 {
			t.Fatalf("tty %v: %d views marked %q in:\n%s", tty, n, mark, s)
		}
		if !tty && strings.Contains(s, clearScreen) {
			t.Fatalf("escape codes written to a pipe:\n%q", s)
		}
	}
}

// submit --epochs: the coordinator counts the steps from the data set as
// train does (60000 images at batch 100: 600 a pass); with --steps too,
// or less than one step, it is refused.
func TestSubmitEpochs(t *testing.T) {
	c := newTestCluster(t, 1, 0)
	cl := c.client()
	c.waitWorkers(cl, 0)
	out, errs, code := gencluster(t, "submit", "--coordinator", c.coords[0], "--model", "vae", "--batch", "100", "--epochs", "0.5")
	if code != 0 {
		t.Fatalf("submit --epochs: exit %d: %s", code, errs)
	}
	job := strings.TrimSpace(out)
	if !strings.Contains(errs, "steps=300") {
		t.Errorf("submit did not log the steps it got: %s", errs)
	}
	c.waitJob(cl, job, 10*time.Second, "job of 300 steps", func(string, int64, int) bool { return true })
	st, _, _ := gencluster(t, "status", "--coordinator", c.coords[0], "--json")
	var s statusJSON
	if err := json.Unmarshal([]byte(st), &s); err != nil {
		t.Fatal(err)
	}
	var steps int64 = -1
	for _, j := range append(s.Queue, derefJob(s.Job)...) {
		if j.ID == job {
			steps = j.TotalSteps
		}
	}
	if steps != 300 {
		t.Fatalf("0.5 epochs of mnist at batch 100: %d steps, want 300", steps)
	}
	for _, bad := range [][]string{
		{"--epochs", "1", "--steps", "10"},
		{"--epochs", "0.001"}, // 0.6 of a step
		{"--epochs", "-2"},
	} {
		args := append([]string{"submit", "--coordinator", c.coords[0], "--model", "vae", "--batch", "100"}, bad...)
		if _, errs, code := gencluster(t, args...); code == 0 {
			t.Errorf("submit %v: accepted", bad)
		} else if !strings.Contains(errs, "epochs") && !strings.Contains(errs, "step") {
			t.Errorf("submit %v: %s", bad, errs)
		}
	}
}

func derefJob(j *jobJSON) []jobJSON {
	if j == nil {
		return nil
	}
	return []jobJSON{*j}
}
