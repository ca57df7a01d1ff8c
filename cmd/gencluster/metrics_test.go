package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape GETs url and parses the Prometheus text it serves.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := tryScrape(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	return fams
}

// value is the value of the family's series whose labels include want
// (name=value pairs), or NaN-like -1 and false if there is none.
func value(fams map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return -1, false
	}
series:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(want); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == want[i] && l.GetValue() == want[i+1] {
					found = true
				}
			}
			if !found {
				continue series
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return -1, false
}

// checkTypes fails for each named family that is missing or not of its
// type.
func checkTypes(t *testing.T, where string, fams map[string]*dto.MetricFamily, want map[string]dto.MetricType) {
	t.Helper()
	for name, typ := range want {
		f := fams[name]
		switch {
		case f == nil:
			t.Errorf("%s: no %s", where, name)
		case f.GetType() != typ:
			t.Errorf("%s: %s is a %v, want %v", where, name, f.GetType(), typ)
		}
	}
}

// Every coordinator and worker serves Prometheus metrics on --http: names
// and types as documented, and the counters move while a job trains.
func TestMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("process cluster test")
	}
	dir := t.TempDir()
	a1, h1 := freeAddr(t), freeAddr(t)
	startProc(t, "coordinator c1", "coordinator", "--id", "c1", "--listen", a1, "--peers", "c1="+a1,
		"--data-dir", filepath.Join(dir, "c1"), "--http", h1)
	var hw []string
	for i := range 2 {
		h := freeAddr(t)
		hw = append(hw, h)
		startProc(t, fmt.Sprintf("worker w%d", i), "worker", "--join", a1, "--listen", "127.0.0.1:0",
			"--data-dir", filepath.Join(dir, fmt.Sprintf("w%d", i)), "--threads", "1", "--http", h)
	}
	awaitHTTP(t, "http://"+h1+"/readyz", 200, "ok")
	for _, h := range hw {
		awaitHTTP(t, "http://"+h+"/readyz", 200, "ok")
	}
	if _, errs, code := gencluster(t, "submit", "--coordinator", a1, "--model", "vae", "--batch", "16", "--steps", "100000",
		"--min-workers", "2", "--checkpoint-every", "200"); code != 0 {
		t.Fatalf("submit: %s", errs)
	}

	// The job runs: wait until the first worker has done a few steps.
	var first map[string]*dto.MetricFamily
	deadline := time.Now().Add(60 * time.Second)
	for {
		first = scrape(t, "http://"+hw[0]+"/metrics")
		if v, _ := value(first, "gencluster_worker_steps_total"); v >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker's gencluster_worker_steps_total did not reach 5 within 60s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	checkTypes(t, "worker", first, map[string]dto.MetricType{
		"gencluster_build_info":                       dto.MetricType_GAUGE,
		"go_goroutines":                               dto.MetricType_GAUGE,
		"process_resident_memory_bytes":               dto.MetricType_GAUGE,
		"gencluster_worker_steps_total":               dto.MetricType_COUNTER,
		"gencluster_worker_images_total":              dto.MetricType_COUNTER,
		"gencluster_worker_allreduce_bytes_total":     dto.MetricType_COUNTER,
		"gencluster_worker_step_seconds":              dto.MetricType_HISTOGRAM,
		"gencluster_worker_compute_seconds":           dto.MetricType_HISTOGRAM,
		"gencluster_worker_allreduce_seconds":         dto.MetricType_HISTOGRAM,
		"gencluster_worker_allreduce_exposed_seconds": dto.MetricType_HISTOGRAM,
		"gencluster_worker_optimizer_seconds":         dto.MetricType_HISTOGRAM,
		"gencluster_worker_loss":                      dto.MetricType_GAUGE,
		"gencluster_worker_job_step":                  dto.MetricType_GAUGE,
		"gencluster_worker_ring_generation":           dto.MetricType_GAUGE,
		"gencluster_worker_world_size":                dto.MetricType_GAUGE,
		"gencluster_ring_refused_frames_total":        dto.MetricType_COUNTER,
		"gencluster_worker_failures_reported_total":   dto.MetricType_COUNTER,
		"gencluster_worker_checkpoints_total":         dto.MetricType_COUNTER,
		"gencluster_worker_checkpoint_copy_seconds":   dto.MetricType_HISTOGRAM,
		"gencluster_worker_checkpoint_commit_seconds": dto.MetricType_HISTOGRAM,
		"gencluster_worker_checkpoint_size_bytes":     dto.MetricType_GAUGE,
	})
	if v, _ := value(first, "gencluster_worker_world_size"); v != 2 {
		t.Errorf("worker world size %v, want 2", v)
	}
	time.Sleep(time.Second)
	second := scrape(t, "http://"+hw[0]+"/metrics")
	for _, name := range []string{"gencluster_worker_steps_total", "gencluster_worker_images_total", "gencluster_worker_allreduce_bytes_total", "gencluster_worker_step_seconds"} {
		a, _ := value(first, name)
		b, _ := value(second, name)
		if !(b > a) {
			t.Errorf("%s did not move while the job trained: %v then %v", name, a, b)
		}
	}
	// Each step sums the whole gradient: bytes per step are the same on
	// every step, and images per step are this rank's share of the batch.
	steps, _ := value(second, "gencluster_worker_steps_total")
	images, _ := value(second, "gencluster_worker_images_total")
	if images != 8*steps {
		t.Errorf("%v images in %v steps; want 8 a step (half of batch 16)", images, steps)
	}

	c := scrape(t, "http://"+h1+"/metrics")
	checkTypes(t, "coordinator", c, map[string]dto.MetricType{
		"gencluster_build_info":                       dto.MetricType_GAUGE,
		"gencluster_raft_state":                       dto.MetricType_GAUGE,
		"gencluster_raft_term":                        dto.MetricType_GAUGE,
		"gencluster_raft_commit_index":                dto.MetricType_GAUGE,
		"gencluster_raft_applied_index":               dto.MetricType_GAUGE,
		"gencluster_raft_leader_changes_total":        dto.MetricType_COUNTER,
		"gencluster_ring_generation":                  dto.MetricType_GAUGE,
		"gencluster_ring_world_size":                  dto.MetricType_GAUGE,
		"gencluster_workers":                          dto.MetricType_GAUGE,
		"gencluster_jobs":                             dto.MetricType_GAUGE,
		"gencluster_job_step":                         dto.MetricType_GAUGE,
		"gencluster_job_steps":                        dto.MetricType_GAUGE,
		"gencluster_lease_age_seconds":                dto.MetricType_GAUGE,
		"gencluster_worker_reported_compute_seconds":  dto.MetricType_GAUGE,
		"gencluster_worker_straggler":                 dto.MetricType_GAUGE,
		"gencluster_failure_reports_total":            dto.MetricType_COUNTER,
		"gencluster_lease_expiries_total":             dto.MetricType_COUNTER,
		"gencluster_checkpoint_committed_total":       dto.MetricType_COUNTER,
		"gencluster_checkpoint_committed_bytes_total": dto.MetricType_COUNTER,
	})
	if n := len(c["gencluster_lease_age_seconds"].GetMetric()); n != 2 {
		t.Errorf("the leader's lease ages cover %d workers, want 2", n)
	}
	for _, kv := range [][3]string{
		{"gencluster_raft_state", "Leader", "1"}, {"gencluster_raft_state", "Follower", "0"},
		{"gencluster_jobs", "running", "1"}, {"gencluster_jobs", "queued", "0"},
	} {
		label := "state"
		if v, ok := value(c, kv[0], label, kv[1]); !ok || fmt.Sprint(v) != kv[2] {
			t.Errorf("%s{state=%q} = %v, want %s", kv[0], kv[1], v, kv[2])
		}
	}
	if v, _ := value(c, "gencluster_ring_world_size"); v != 2 {
		t.Errorf("coordinator's ring world size %v, want 2", v)
	}
	if v, _ := value(c, "gencluster_raft_leader_changes_total"); v < 1 {
		t.Errorf("leader changes %v, want at least the first election", v)
	}
	if v, _ := value(c, "gencluster_build_info"); v != 1 || !strings.Contains(c["gencluster_build_info"].String(), "goversion") {
		t.Errorf("build info: %v", c["gencluster_build_info"])
	}
	committed, _ := value(c, "gencluster_raft_commit_index")
	step, _ := value(c, "gencluster_job_step")
	deadline = time.Now().Add(30 * time.Second)
	for {
		c2 := scrape(t, "http://"+h1+"/metrics")
		nc, _ := value(c2, "gencluster_raft_commit_index")
		ns, _ := value(c2, "gencluster_job_step")
		if nc > committed && ns > step {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the coordinator's commit index (%v→%v) and job step (%v→%v) did not move in 30s", committed, nc, step, ns)
		}
		time.Sleep(300 * time.Millisecond)
	}
	// Checkpoints: rank 0 counts one held, with its times and size, and
	// the coordinator one committed, with its bytes.
	deadline = time.Now().Add(60 * time.Second)
	for {
		var held, size float64
		for _, h := range hw {
			w := scrape(t, "http://"+h+"/metrics")
			n, _ := value(w, "gencluster_worker_checkpoints_total", "outcome", "held")
			s, _ := value(w, "gencluster_worker_checkpoint_size_bytes")
			held, size = held+n, max(size, s)
		}
		cc := scrape(t, "http://"+h1+"/metrics")
		committed, _ := value(cc, "gencluster_checkpoint_committed_total")
		bytes, _ := value(cc, "gencluster_checkpoint_committed_bytes_total")
		if held >= 1 && committed >= 1 {
			if size <= 0 || bytes < size {
				t.Errorf("checkpoint size %v on the worker, %v bytes committed on the coordinator", size, bytes)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint held (%v) and committed (%v) in the metrics within 60s", held, committed)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// --log-format json: every line a long-running command writes is one JSON
// object with time, level and msg; a bad format is refused.
func TestLogFormatJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	a1 := freeAddr(t)
	p := startProc(t, "coordinator c1", "--log-format", "json", "coordinator", "--id", "c1", "--listen", a1, "--peers", "c1="+a1,
		"--data-dir", filepath.Join(t.TempDir(), "c1"))
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(p.log.String(), "raft leadership changed") {
		if time.Now().After(deadline) {
			t.Fatalf("no leadership line in 20s:\n%s", tail(p.log.String(), 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	lines := strings.Split(strings.TrimSpace(p.log.String()), "\n")
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("not a JSON line: %q: %v", l, err)
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := rec[k]; !ok {
				t.Errorf("line without %q: %s", k, l)
			}
		}
	}
	if len(lines) < 3 {
		t.Errorf("only %d log lines", len(lines))
	}
	if _, errs, code := gencluster(t, "--log-format", "xml", "version"); code == 0 || !strings.Contains(errs, "want text or json") {
		t.Errorf("--log-format xml: exit %d, %s", code, errs)
	}
}

// local --http serves the embedded cluster's metrics: each worker's series
// labelled with its id, each coordinator's with its own.
func TestLocalMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	h := freeAddr(t)
	done := make(chan string, 1)
	go func() {
		_, errs, code := gencluster(t, "local", "--workers", "2", "--threads", "1", "--model", "vae", "--batch", "16", "--steps", "300",
			"--checkpoint-every", "0", "--samples", "0", "--out", t.TempDir(), "--http", h)
		if code != 0 {
			done <- errs
		}
		close(done)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case errs, ok := <-done:
			if ok {
				t.Fatalf("local: %s", errs)
			}
			t.Fatal("local ended before its metrics showed two workers training")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no metrics of two training workers within 60s")
		}
		fams, err := tryScrape("http://" + h + "/metrics")
		if err == nil {
			f := fams["gencluster_worker_steps_total"]
			if f != nil && len(f.GetMetric()) == 2 {
				for _, m := range f.GetMetric() {
					if len(m.GetLabel()) != 1 || m.GetLabel()[0].GetName() != "worker" {
						t.Errorf("worker series labels: %v", m.GetLabel())
					}
				}
				if _, ok := value(fams, "gencluster_raft_state", "coordinator", "c0", "state", "Leader"); !ok {
					t.Errorf("no gencluster_raft_state{coordinator=\"c0\"}")
				}
				break
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	<-done
}

// tryScrape is scrape returning the error instead of failing the test.
func tryScrape(url string) (map[string]*dto.MetricFamily, error) {
	c := http.Client{Timeout: 5 * time.Second}
	res, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, res.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(res.Body)
}

// A worker slowed on purpose (SIGSTOP bursts: stopped half the time) is
// flagged a straggler in status and the leader's metrics, and not evicted;
// every worker's heartbeat age and compute time are shown.
func TestStraggler(t *testing.T) {
	if testing.Short() {
		t.Skip("process cluster test")
	}
	dir := t.TempDir()
	a1, h1 := freeAddr(t), freeAddr(t)
	startProc(t, "coordinator c1", "coordinator", "--id", "c1", "--listen", a1, "--peers", "c1="+a1,
		"--data-dir", filepath.Join(dir, "c1"), "--http", h1, "--lease", "5s")
	var ws []*proc
	for i := range 3 {
		ws = append(ws, startProc(t, fmt.Sprintf("worker w%d", i), "worker", "--join", a1, "--listen", "127.0.0.1:0",
			"--data-dir", filepath.Join(dir, fmt.Sprintf("w%d", i)), "--threads", "1"))
	}
	// A PixelCNN step of 16 images a worker computes for ~50 ms or more on
	// one thread, longer than the slowed worker's running spells below, so
	// every one of its compute spans takes in a whole stop and its median
	// doubles. (With the VAE's half-millisecond compute most steps fall
	// between the stops and the median of 16 need not move.)
	if _, errs, code := gencluster(t, "submit", "--coordinator", a1, "--model", "pixelcnn", "--batch", "48", "--steps", "100000",
		"--min-workers", "3", "--checkpoint-every", "0"); code != 0 {
		t.Fatalf("submit: %s", errs)
	}
	type wj struct {
		ID             string  `json:"id"`
		Addr           string  `json:"addr"`
		HeartbeatAgeMs *int64  `json:"heartbeat_age_ms"`
		ComputeSeconds float64 `json:"compute_seconds"`
		Straggler      bool    `json:"straggler"`
	}
	statusOf := func() []wj {
		out, errs, code := gencluster(t, "status", "--coordinator", a1, "--json")
		if code != 0 {
			t.Fatalf("status: %s", errs)
		}
		var st struct {
			Workers []wj `json:"workers"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatal(err)
		}
		return st.Workers
	}
	// Every worker trains and reports its compute time; no one is slow yet.
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := statusOf()
		ok := len(st) == 3
		for _, w := range st {
			ok = ok && w.ComputeSeconds > 0 && w.HeartbeatAgeMs != nil && *w.HeartbeatAgeMs >= 0 && *w.HeartbeatAgeMs < 5000
		}
		if ok {
			for _, w := range st {
				if w.Straggler {
					t.Logf("note: %s flagged before any slowing (compute %.1f ms)", w.ID, w.ComputeSeconds*1000)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("workers' compute times and heartbeat ages not all known in 60s: %+v", st)
		}
		time.Sleep(300 * time.Millisecond)
	}

	// Slow worker 0: stopped 20 ms of every 40.
	slow := ws[0]
	stop := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				slow.cmd.Process.Signal(syscall.SIGCONT)
				return
			default:
			}
			slow.cmd.Process.Signal(syscall.SIGSTOP)
			time.Sleep(20 * time.Millisecond)
			slow.cmd.Process.Signal(syscall.SIGCONT)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	defer func() { close(stop); <-stopped }()
	// The slowed worker's id, from its own log. (With three workers at most
	// one can be above 1.5 times the median; under a loaded machine another
	// may be, for a while, before the slowed one's window fills.)
	slowID := ""
	if _, after, ok := strings.Cut(slow.log.String(), "msg=\"worker serving\" id="); ok {
		slowID, _, _ = strings.Cut(after, " ")
	}
	if slowID == "" {
		t.Fatalf("no id in the slowed worker's log:\n%s", tail(slow.log.String(), 1000))
	}
	deadline = time.Now().Add(90 * time.Second)
	for {
		st := statusOf()
		var flagged []string
		for _, w := range st {
			if w.Straggler {
				flagged = append(flagged, w.ID)
			}
		}
		if len(st) == 3 && len(flagged) == 1 && flagged[0] == slowID {
			for _, w := range st {
				t.Logf("%s: compute %.1f ms/step, straggler %v", w.ID, w.ComputeSeconds*1000, w.Straggler)
			}
			break
		}
		if len(flagged) > 1 {
			t.Fatalf("%d of 3 workers flagged: at most one can be above 1.5 times the median: %+v", len(flagged), st)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slowed worker %s was not flagged (alone) within 90s: %+v", slowID, st)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if v, _ := value(scrape(t, "http://"+h1+"/metrics"), "gencluster_stragglers"); v != 1 {
		t.Errorf("gencluster_stragglers = %v, want 1", v)
	}
	out, _, _ := gencluster(t, "status", "--coordinator", a1)
	if !strings.Contains(out, "STRAGGLER") || !strings.Contains(out, "ms/step") || !strings.Contains(out, "heard ") {
		t.Errorf("status text lacks the straggler flag, compute time or heartbeat age:\n%s", out)
	}
}

func TestStepRateETA(t *testing.T) {
	var r stepRate
	t0 := time.Unix(1000, 0)
	if got := r.eta(t0, 0, 100); got != "-" {
		t.Errorf("eta before any progress: %q", got)
	}
	r.see(t0, 0) // no progress yet: not the start
	r.see(t0.Add(time.Second), 10)
	if got := r.eta(t0.Add(time.Second), 10, 100); got != "-" {
		t.Errorf("eta with one observation: %q", got)
	}
	// 20 steps in 10 s: 0.5 s a step, 70 to go.
	if got := r.eta(t0.Add(11*time.Second), 30, 100); got != "35s" {
		t.Errorf("eta = %q, want 35s", got)
	}
}
