package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/coordinator"
)

// The randomized fault schedule (issue: membership under real churn). A
// round runs one VAE job on 3 coordinators and 3 or 4 workers, all real
// processes on loopback with workers on --listen 127.0.0.1:0 (a restarted
// worker comes back on a new port), throws a seeded schedule of faults at
// it, and checks the invariants in chaosRound.check. scripts/chaos.sh runs
// many rounds; CI runs one short one.
var (
	chaosSeed   = flag.Uint64("chaos.seed", 1, "first seed of the fault schedules")
	chaosRounds = flag.Int("chaos.rounds", 1, "rounds (one seed each, from -chaos.seed)")
	chaosFaults = flag.Int("chaos.faults", 3, "faults per round")
	chaosSteps  = flag.Int64("chaos.steps", 900, "steps of each round's job")
	chaosReport = flag.String("chaos.report", "", "append one JSON line per round to this file")
	chaosAuth   = flag.String("chaos.auth", "none", "how the round's processes authenticate: none, certs (mutual TLS) or token (coordinators certificates, workers and clients the join token)")
)

// Fault kinds.
const (
	faultKillWorker  = "kill-worker"  // SIGKILL a worker, restart it on a new port
	faultKillLeader  = "kill-leader"  // SIGKILL the raft leader, restart it
	faultPause       = "pause-worker" // SIGSTOP a worker, SIGCONT it later
	faultJoin        = "join-worker"  // a new worker joins mid-job
	faultWholeKill   = "kill-all"     // SIGKILL every process, restart all
	chaosJobSeed     = 7
	chaosBatch       = 24
	chaosCheckpoints = 50
)

var faultKinds = []string{faultKillWorker, faultKillLeader, faultPause, faultJoin, faultWholeKill}

// fault is one injected fault and what it cost.
type fault struct {
	Kind     string  `json:"kind"`
	At       int64   `json:"at_step"`          // job step (as status showed it) when injected
	Target   string  `json:"target,omitempty"` // worker id or coordinator
	Held     float64 `json:"held_s,omitempty"` // how long the process stayed down or paused
	Recovery float64 `json:"recovery_s"`       // injection to the next step applied in a newer state
	when     time.Time
}

// roundResult is one round's record (-chaos.report).
type roundResult struct {
	Seed       uint64   `json:"seed"`
	Workers    int      `json:"workers"`
	Steps      int64    `json:"steps"`
	Faults     []fault  `json:"faults"`
	Violations []string `json:"violations"`
	Comparable bool     `json:"comparable"` // every step ran at the starting world size: final weights checked against an uninterrupted run
	Seconds    float64  `json:"seconds"`
}

func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("process cluster test")
	}
	var results []roundResult
	refs := &chaosRefs{sums: map[int]string{}}
	for r := range *chaosRounds {
		seed := *chaosSeed + uint64(r)
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			res := runChaosRound(t, seed, refs)
			results = append(results, res)
			if *chaosReport != "" {
				f, err := os.OpenFile(*chaosReport, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
				if err != nil {
					t.Fatal(err)
				}
				json.NewEncoder(f).Encode(res)
				f.Close()
			}
			for _, v := range res.Violations {
				t.Errorf("invariant violated: %s", v)
			}
		})
	}
	t.Log(chaosSummary(results))
}

// chaosSummary: rounds, faults by kind, violations, recovery median and worst.
func chaosSummary(results []roundResult) string {
	rec := map[string][]float64{}
	faults, violations, comparable := 0, 0, 0
	for _, r := range results {
		faults += len(r.Faults)
		violations += len(r.Violations)
		if r.Comparable {
			comparable++
		}
		for _, f := range r.Faults {
			rec[f.Kind] = append(rec[f.Kind], f.Recovery)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "chaos summary: %d rounds, %d faults, %d invariant violations, %d rounds compared bit-for-bit with an uninterrupted run\n", len(results), faults, violations, comparable)
	for _, k := range faultKinds {
		v := rec[k]
		if len(v) == 0 {
			continue
		}
		slices.Sort(v)
		fmt.Fprintf(&b, "  %-13s %3d  recovery median %.2fs  worst %.2fs\n", k, len(v), v[len(v)/2], v[len(v)-1])
	}
	return b.String()
}

// chaosRefs caches the uninterrupted run's final checksum per world size.
type chaosRefs struct {
	mu   sync.Mutex
	sums map[int]string
}

// chaosProc is one worker data dir and the processes that ran on it.
type chaosProc struct {
	dataDir string
	procs   []*proc
}

func (w *chaosProc) cur() *proc { return w.procs[len(w.procs)-1] }

func (w *chaosProc) alive() bool {
	select {
	case <-w.cur().done:
		return false
	default:
		return true
	}
}

// life is when one process was alive and running (not paused).
type life struct {
	addr     string
	from, to time.Time // to is zero while it runs
	paused   [][2]time.Time
}

type chaosRound struct {
	t         *testing.T
	rng       *rand.Rand
	dir       string
	coords    []string
	peers     string
	cprocs    []*proc // the current process of each coordinator
	allCoords []*proc // every coordinator process of the round
	workers   []*chaosProc
	lives     map[*proc]*life
	job       string
	steps     int64
	start     int // workers at the start
	sec       security
}

func runChaosRound(t *testing.T, seed uint64, refs *chaosRefs) roundResult {
	began := time.Now()
	r := &chaosRound{t: t, rng: rand.New(rand.NewPCG(seed, 0x6368616f73)), dir: t.TempDir(), lives: map[*proc]*life{}, steps: *chaosSteps}
	r.start = 3 + r.rng.IntN(2)
	switch *chaosAuth {
	case "none":
	case "certs":
		r.sec = certSecurity(t)
	case "token":
		r.sec = tokenSecurity(t)
	default:
		t.Fatalf("-chaos.auth %q: want none, certs or token", *chaosAuth)
	}
	for i := range 3 {
		a := freeAddr(t)
		r.coords = append(r.coords, a)
		r.peers += fmt.Sprintf("c%d=%s,", i, a)
	}
	r.peers = strings.TrimSuffix(r.peers, ",")
	for i := range r.coords {
		r.cprocs = append(r.cprocs, r.startCoordinator(i))
	}
	for range r.start {
		r.addWorker()
	}
	t.Cleanup(func() { // a paused process would not stop on SIGTERM
		for _, w := range r.workers {
			w.cur().cmd.Process.Signal(syscall.SIGCONT)
		}
	})
	cl, err := coordinator.NewClient(r.coords, r.sec.dial...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	r.waitStatus(cl, time.Minute, "every worker joined", func(st *pb.StatusResponse) (bool, string) {
		return len(st.GetWorkers()) == r.start, fmt.Sprintf("%d workers", len(st.GetWorkers()))
	})
	out, errs, code := gencluster(t, append(slices.Clone(r.sec.client), "submit", "--coordinator", strings.Join(r.coords, ","), "--model", "vae", "--batch", strconv.Itoa(chaosBatch),
		"--steps", strconv.FormatInt(r.steps, 10), "--seed", strconv.Itoa(chaosJobSeed), "--checkpoint-every", strconv.Itoa(chaosCheckpoints), "--min-workers", "1")...)
	if code != 0 {
		t.Fatalf("submit: %s", errs)
	}
	r.job = strings.TrimSpace(out)

	res := roundResult{Seed: seed, Workers: r.start, Steps: r.steps}
	n := *chaosFaults
	for i := range n {
		at := r.steps * int64(i+1) / int64(n+2)
		step := r.waitStep(cl, at)
		if step < 0 {
			break // the job ended first
		}
		f := r.inject(cl, r.pickFault(), step)
		res.Faults = append(res.Faults, f)
		t.Logf("fault %d: %s at step %d (target %s, held %.1fs)", i+1, f.Kind, f.At, f.Target, f.Held)
	}
	var final *pb.JobInfo
	r.waitStatus(cl, 5*time.Minute, "job ended", func(st *pb.StatusResponse) (bool, string) {
		for _, j := range st.GetJobs() {
			if j.GetId() == r.job {
				final = j
				return j.GetState() == "done" || j.GetState() == "failed", fmt.Sprintf("%s at step %d", j.GetState(), j.GetStep())
			}
		}
		return false, "no job"
	})
	for i := range res.Faults {
		res.Faults[i].Recovery = r.recovery(res.Faults[i]).Seconds()
	}
	res.Violations, res.Comparable = r.check(final, refs)
	res.Seconds = time.Since(began).Seconds()
	return res
}

func (r *chaosRound) startCoordinator(i int) *proc {
	p := startProc(r.t, fmt.Sprintf("coordinator c%d", i), append(slices.Clone(r.sec.coord), "coordinator", "--id", fmt.Sprintf("c%d", i), "--listen", r.coords[i],
		"--peers", r.peers, "--data-dir", filepath.Join(r.dir, fmt.Sprintf("c%d", i)), "--lease", "2s", "--rejoin-wait", "15s")...)
	r.allCoords = append(r.allCoords, p)
	return p
}

func (r *chaosRound) addWorker() *chaosProc {
	w := &chaosProc{dataDir: filepath.Join(r.dir, fmt.Sprintf("w%d", len(r.workers)))}
	r.workers = append(r.workers, w)
	r.startWorker(w)
	return w
}

// startWorker starts a process on w's data dir on a fresh port, as docs/CLI.md
// shows (--listen HOST:0), and records its life.
func (r *chaosRound) startWorker(w *chaosProc) {
	p := startProc(r.t, fmt.Sprintf("worker %s #%d", filepath.Base(w.dataDir), len(w.procs)+1), append(slices.Clone(r.sec.worker), "worker", "--join", strings.Join(r.coords, ","),
		"--listen", "127.0.0.1:0", "--data-dir", w.dataDir, "--threads", "1", "--log-level", "debug")...)
	w.procs = append(w.procs, p)
	r.lives[p] = &life{from: time.Now()}
}

// killWorker SIGKILLs w's process and records its end: from the moment the
// signal is sent, the process may be dead, and its removal is legitimate.
func (r *chaosRound) killWorker(w *chaosProc) {
	p := w.cur()
	r.lives[p].to = time.Now()
	p.kill()
}

func (r *chaosRound) workerID(w *chaosProc) string {
	b, _ := os.ReadFile(filepath.Join(w.dataDir, "worker-id"))
	return strings.TrimSpace(string(b))
}

// pickFault draws a fault kind the cluster can take now.
func (r *chaosRound) pickFault() string {
	for {
		k := faultKinds[r.rng.IntN(len(faultKinds))]
		if k == faultJoin && len(r.workers) >= 4 {
			continue
		}
		return k
	}
}

// inject applies one fault and returns its record.
func (r *chaosRound) inject(cl *coordinator.Client, kind string, step int64) fault {
	f := fault{Kind: kind, At: step, when: time.Now()}
	hold := func(min, max time.Duration) time.Duration {
		d := min + time.Duration(r.rng.Int64N(int64(max-min)))
		time.Sleep(d)
		return d
	}
	switch kind {
	case faultKillWorker:
		w := r.workers[r.rng.IntN(len(r.workers))]
		f.Target = r.workerID(w)
		r.killWorker(w)
		f.Held = hold(0, 3*time.Second).Seconds()
		r.startWorker(w)
	case faultPause:
		w := r.workers[r.rng.IntN(len(r.workers))]
		f.Target = r.workerID(w)
		p := w.cur()
		p.cmd.Process.Signal(syscall.SIGSTOP)
		stop := time.Now()
		f.Held = hold(500*time.Millisecond, 8*time.Second).Seconds()
		p.cmd.Process.Signal(syscall.SIGCONT)
		r.lives[p].paused = append(r.lives[p].paused, [2]time.Time{stop, time.Now()})
	case faultJoin:
		w := r.addWorker()
		f.Target = filepath.Base(w.dataDir)
	case faultKillLeader:
		i := r.leader(cl)
		f.Target = fmt.Sprintf("c%d", i)
		r.cprocs[i].kill()
		f.Held = hold(time.Second, 4*time.Second).Seconds()
		r.cprocs[i] = r.startCoordinator(i)
	case faultWholeKill:
		f.Target = "all"
		for _, w := range r.workers {
			r.killWorker(w)
		}
		for _, c := range r.cprocs {
			c.kill()
		}
		f.Held = hold(0, 2*time.Second).Seconds()
		for i := range r.cprocs {
			r.cprocs[i] = r.startCoordinator(i)
		}
		// The workers come back one by one, in random order.
		for _, i := range r.rng.Perm(len(r.workers)) {
			time.Sleep(time.Duration(r.rng.IntN(1500)) * time.Millisecond)
			r.startWorker(r.workers[i])
		}
	}
	return f
}

// leader returns the index of the raft leader's coordinator.
func (r *chaosRound) leader(cl *coordinator.Client) int {
	var i int
	r.waitStatus(cl, 30*time.Second, "a leader", func(st *pb.StatusResponse) (bool, string) {
		i = slices.Index(r.coords, st.GetLeader())
		return i >= 0, "leader " + st.GetLeader()
	})
	return i
}

// waitStep waits until the job has reached step at; -1 if it ended first.
func (r *chaosRound) waitStep(cl *coordinator.Client, at int64) int64 {
	var step int64
	r.waitStatus(cl, 5*time.Minute, fmt.Sprintf("job past step %d", at), func(st *pb.StatusResponse) (bool, string) {
		for _, j := range st.GetJobs() {
			if j.GetId() == r.job {
				step = j.GetStep()
				if j.GetState() == "done" || j.GetState() == "failed" {
					step = -1
					return true, ""
				}
				return step >= at, fmt.Sprintf("%s at step %d", j.GetState(), step)
			}
		}
		return false, "no job"
	})
	return step
}

func (r *chaosRound) waitStatus(cl *coordinator.Client, timeout time.Duration, what string, cond func(*pb.StatusResponse) (bool, string)) {
	r.t.Helper()
	pollStatus(r.t, cl, timeout, what, cond)
}

// logLine is one parsed slog text line.
type logLine struct {
	at    time.Time
	msg   string
	attrs map[string]string
}

var attrRE = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S*)`)

func parseLog(s string) []logLine {
	var out []logLine
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := logLine{attrs: map[string]string{}}
		for _, m := range attrRE.FindAllStringSubmatch(sc.Text(), -1) {
			v := m[2]
			if uq, err := strconv.Unquote(v); err == nil {
				v = uq
			}
			if _, dup := l.attrs[m[1]]; !dup {
				l.attrs[m[1]] = v
			}
		}
		t, err := time.Parse(time.RFC3339Nano, l.attrs["time"])
		if err != nil {
			continue
		}
		l.at, l.msg = t, l.attrs["msg"]
		out = append(out, l)
	}
	return out
}

func atoi(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// stepEvent is one applied step, from any worker process.
type stepEvent struct {
	at         time.Time
	step       int64
	generation int64
	world      int64
}

func (r *chaosRound) stepEvents() []stepEvent {
	var ev []stepEvent
	for _, w := range r.workers {
		for _, p := range w.procs {
			for _, l := range parseLog(p.log.String()) {
				if l.msg == "step" && l.attrs["job"] == r.job {
					ev = append(ev, stepEvent{at: l.at, step: atoi(l.attrs["step"]), generation: atoi(l.attrs["generation"]), world: atoi(l.attrs["world"])})
				}
			}
		}
	}
	sort.Slice(ev, func(i, j int) bool { return ev[i].at.Before(ev[j].at) })
	return ev
}

// recovery is the time from a fault to the first step applied after it
// in a newer ring generation than any step before it, or (faults that
// need not change the ring: a leader kill, a short pause) the first step
// applied after it at all.
func (r *chaosRound) recovery(f fault) time.Duration {
	ev := r.stepEvents()
	var gen int64
	for _, e := range ev {
		if e.at.Before(f.when) {
			gen = max(gen, e.generation)
		}
	}
	for _, e := range ev {
		if !e.at.After(f.when) {
			continue
		}
		if e.generation > gen || f.Kind == faultKillLeader || f.Kind == faultPause && f.Held < 4 {
			return e.at.Sub(f.when)
		}
	}
	return 0
}

// check verifies the round's invariants and returns the violations, and
// whether the final weights were compared with an uninterrupted run.
func (r *chaosRound) check(final *pb.JobInfo, refs *chaosRefs) (violations []string, comparable bool) {
	bad := func(format string, args ...any) { violations = append(violations, fmt.Sprintf(format, args...)) }
	// 1. The job ends done at its step count.
	if final.GetState() != "done" || final.GetStep() != r.steps {
		bad("job ended %s at step %d, want done at %d (%s)", final.GetState(), final.GetStep(), r.steps, final.GetMessage())
	}
	// 2. Per process, the applied steps are contiguous: each step is the
	// one after the last (a sync may jump ahead to the donor's step),
	// none is applied twice.
	addrOf := map[string]*proc{}
	worlds := map[int64]bool{}
	for _, w := range r.workers {
		for _, p := range w.procs {
			cur := int64(-1)
			for _, l := range parseLog(p.log.String()) {
				switch {
				case l.msg == "worker serving":
					addrOf[l.attrs["addr"]] = p
					r.lives[p].addr = l.attrs["addr"]
				case l.msg == "ring ready" && l.attrs["job"] == r.job:
					if s := atoi(l.attrs["step"]); s < cur {
						bad("%s: ring ready at step %d after applying step %d (went back)", p.name, s, cur)
					} else {
						cur = s
					}
				case l.msg == "step" && l.attrs["job"] == r.job:
					s := atoi(l.attrs["step"])
					worlds[atoi(l.attrs["world"])] = true
					if cur >= 0 && s != cur+1 {
						bad("%s: applied step %d after step %d", p.name, s, cur)
					}
					cur = s
				}
			}
		}
	}
	// 3. Every replica that reached the end holds the same parameters.
	sums := map[string][]string{}
	for _, w := range r.workers {
		if !w.alive() {
			continue
		}
		if step, sum := w.cur().completion(r.job); step == r.steps {
			sums[sum] = append(sums[sum], w.cur().name)
		}
	}
	if len(sums) != 1 {
		bad("final replicas differ or none finished: %v", sums)
	}
	// 4. No worker process that was alive and not paused was removed.
	const slack = 2 * time.Second // a decision logged just after a SIGCONT
	for _, c := range r.allCoords {
		for _, l := range parseLog(c.log.String()) {
			if l.msg != "worker removed" {
				continue
			}
			p := addrOf[l.attrs["addr"]]
			if p == nil {
				continue // an address no process of this round had (none)
			}
			lf := r.lives[p]
			if !lf.to.IsZero() && !l.at.Before(lf.to) {
				continue // dead by then
			}
			paused := false
			for _, iv := range lf.paused {
				if !l.at.Before(iv[0]) && l.at.Before(iv[1].Add(slack)) {
					paused = true
				}
			}
			if !paused {
				bad("%s (%s) was removed at %s while alive and running: %s", p.name, l.attrs["worker"], l.at.Format("15:04:05.000"), l.attrs["why"]+" "+l.attrs["verdict"])
			}
		}
	}
	// 5. With every step at the starting world size, the final weights are
	// those of an uninterrupted run.
	comparable = len(worlds) == 1 && worlds[int64(r.start)] && len(sums) == 1
	if comparable {
		want := refs.get(r.t, r.start, r.steps)
		for got := range sums {
			if got != want {
				bad("final parameters %s differ from the uninterrupted run's %s (every step at world %d)", got, want, r.start)
			}
		}
	}
	return violations, comparable
}

// get returns the final checksum of an uninterrupted run with n workers.
func (c *chaosRefs) get(t *testing.T, n int, steps int64) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.sums[n]; ok {
		return s
	}
	tc := newTestCluster(t, 1, 0)
	var ws []*proc
	for i := range n {
		ws = append(ws, startProc(t, fmt.Sprintf("reference worker %d", i), "worker", "--join", strings.Join(tc.coords, ","),
			"--listen", "127.0.0.1:0", "--data-dir", filepath.Join(tc.dir, fmt.Sprintf("w%d", i)), "--threads", "1"))
	}
	cl := tc.client()
	tc.waitWorkers(cl, n)
	out, errs, code := gencluster(t, "submit", "--coordinator", strings.Join(tc.coords, ","), "--model", "vae", "--batch", strconv.Itoa(chaosBatch),
		"--steps", strconv.FormatInt(steps, 10), "--seed", strconv.Itoa(chaosJobSeed), "--checkpoint-every", strconv.Itoa(chaosCheckpoints), "--min-workers", "1")
	if code != 0 {
		t.Fatalf("reference submit: %s", errs)
	}
	job := strings.TrimSpace(out)
	tc.waitJob(cl, job, 5*time.Minute, "reference job done", func(state string, _ int64, _ int) bool { return state == "done" || state == "failed" })
	sum := ""
	for _, w := range ws {
		if step, s := w.completion(job); step == steps {
			sum = s
		}
	}
	c.sums[n] = sum
	return sum
}

// TestChaosCheck: the invariant checks catch what they are for, on
// synthetic logs: a live, running worker removed; steps skipped or applied
// twice; replicas that differ; a job not done. And they let legitimate
// removals (a dead or paused process) pass.
func TestChaosCheck(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(d time.Duration) string { return t0.Add(d).Format(time.RFC3339Nano) }
	newProc := func(name, log string, dead bool) *proc {
		p := &proc{name: name, log: &syncBuffer{}, done: make(chan struct{})}
		p.log.Write([]byte(log))
		if dead {
			close(p.done)
		}
		return p
	}
	stepLines := func(from, to int64, d time.Duration) string {
		var b strings.Builder
		for s := from; s <= to; s++ {
			fmt.Fprintf(&b, "time=%s level=DEBUG msg=step job=job-1 step=%d generation=2 rank=0 world=2\n", at(d), s)
		}
		return b.String()
	}
	done := func(sum string) string {
		return fmt.Sprintf("time=%s level=INFO msg=\"job complete\" job=job-1 step=10 generation=2 rank=0 params_checksum=%s\n", at(time.Minute), sum)
	}
	build := func(removal string, aLog, bLog string, aDead bool) *chaosRound {
		a := newProc("worker a", "time="+at(0)+" level=INFO msg=\"worker serving\" id=w-a addr=127.0.0.1:1001 data_dir=x\n"+aLog, aDead)
		b := newProc("worker b", "time="+at(0)+" level=INFO msg=\"worker serving\" id=w-b addr=127.0.0.1:1002 data_dir=y\n"+bLog, false)
		c := newProc("coordinator", removal, false)
		r := &chaosRound{t: t, job: "job-1", steps: 10, start: 2, lives: map[*proc]*life{a: {from: t0}, b: {from: t0}}, allCoords: []*proc{c},
			workers: []*chaosProc{{procs: []*proc{a}}, {procs: []*proc{b}}}}
		if aDead {
			r.lives[a].to = t0.Add(10 * time.Second)
		}
		r.lives[b].paused = [][2]time.Time{{t0.Add(20 * time.Second), t0.Add(25 * time.Second)}}
		return r
	}
	good := stepLines(1, 10, time.Second) + done("abc")
	jobDone := &pb.JobInfo{State: "done", Step: 10}
	refs := &chaosRefs{sums: map[int]string{2: "abc"}}
	removal := func(addr string, d time.Duration) string {
		return fmt.Sprintf("time=%s level=WARN msg=\"worker removed\" worker=w-x addr=%s why=\"failure report\" verdict=\"x\"\n", at(d), addr)
	}
	cases := []struct {
		name  string
		r     *chaosRound
		job   *pb.JobInfo
		wants []string // substrings of the violations, in order; none: clean
	}{
		{"clean", build("", good, good, false), jobDone, nil},
		{"live worker removed", build(removal("127.0.0.1:1002", 5*time.Second), good, good, false), jobDone, []string{"removed", "while alive"}},
		{"dead worker removed", build(removal("127.0.0.1:1001", 12*time.Second), good, good, true), jobDone, nil},
		{"paused worker removed", build(removal("127.0.0.1:1002", 22*time.Second), good, good, false), jobDone, nil},
		{"step skipped", build("", stepLines(1, 4, time.Second)+stepLines(6, 10, time.Second)+done("abc"), good, false), jobDone, []string{"applied step 6 after step 4"}},
		{"step applied twice", build("", stepLines(1, 5, time.Second)+stepLines(5, 10, time.Second)+done("abc"), good, false), jobDone, []string{"applied step 5 after step 5"}},
		{"replicas differ", build("", stepLines(1, 10, time.Second)+done("abd"), good, false), jobDone, []string{"final replicas differ"}},
		{"weights differ from the uninterrupted run", build("", stepLines(1, 10, time.Second)+done("abd"), stepLines(1, 10, time.Second)+done("abd"), false), jobDone, []string{"differ from the uninterrupted run"}},
		{"job not done", build("", good, good, false), &pb.JobInfo{State: "failed", Step: 7}, []string{"job ended failed at step 7"}},
	}
	for _, c := range cases {
		got, _ := c.r.check(c.job, refs)
		if len(got) != len(c.wants) && !(len(c.wants) > 0 && len(got) >= 1) {
			t.Errorf("%s: violations %q, want %d", c.name, got, len(c.wants))
			continue
		}
		joined := strings.Join(got, "; ")
		for _, w := range c.wants {
			if !strings.Contains(joined, w) {
				t.Errorf("%s: violations %q do not mention %q", c.name, got, w)
			}
		}
		if len(c.wants) == 0 && len(got) > 0 {
			t.Errorf("%s: unexpected violations %q", c.name, got)
		}
	}
}
