package main

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/training"
)

// The plain progress lines that scripts and tests read, exactly.
var (
	trainLineRE = regexp.MustCompile(`^step \d+/\d+ \(\d+\.\d%\)  loss \d+\.\d{3}  \d+\.\d img/s  elapsed \d+(m\d+)?s  eta \d+(m\d+)?s$`)
	trainDoneRE = regexp.MustCompile(`^done: step \d+, loss \d+\.\d{3}, \d+s; checkpoint \S+ckpt-\d{10}\.db$`)
)

func TestProgressLines(t *testing.T) {
	p := training.Progress{Step: 25, Total: 40, Loss: 123.4567, ImagesPerSec: 987.65, Elapsed: 1500 * time.Millisecond, ETA: 61 * time.Second}
	if got, want := trainLine(p), "step 25/40 (62.5%)  loss 123.457  987.6 img/s  elapsed 2s  eta 1m1s"; got != want {
		t.Errorf("train line %q, want %q", got, want)
	}
	job := &pb.JobInfo{Spec: &pb.JobSpec{Steps: 30}, Step: 10, Loss: 210.5, ImagesPerSec: 55.55}
	st := &pb.StatusResponse{Ring: []*pb.RingMember{{}, {}}, Generation: 3}
	if got, want := localLine(job, st, 4400*time.Millisecond, "9s"), "step 10/30 (33.3%)  loss 210.500  55.5 img/s  workers 2  generation 3  elapsed 4s  eta 9s"; got != want {
		t.Errorf("local line %q, want %q", got, want)
	}
}

// TestProgressNotTerminal: off a terminal a progress draws nothing, and a
// plain line is due the first time, then not within two seconds, and
// always at the end.
func TestProgressNotTerminal(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out, false, nil, "train", "steps")
	due := []bool{p.lineDue(false)}
	for i := range 5 {
		p.update(int64(i), 5, "loss 1")
		due = append(due, p.lineDue(false))
	}
	due = append(due, p.lineDue(true))
	p.finish()
	if fmt.Sprint(due) != "[true false false false false false true]" {
		t.Errorf("lines due %v, want the first and the final one", due)
	}
	if out.Len() != 0 {
		t.Errorf("a progress off a terminal wrote %q", out.String())
	}
	p.lastLine = time.Now().Add(-3 * time.Second)
	if !p.lineDue(false) {
		t.Error("no line due three seconds after the last")
	}
}

// TestTrainPlainOutput: train, eval and sample with stdout not a
// terminal print exactly their lines: no bar, no escape sequence.
func TestTrainPlainOutput(t *testing.T) {
	out := t.TempDir()
	stdout, stderr, code := gencluster(t, "train", "--model", "vae", "--batch", "32", "--steps", "30", "--threads", "2",
		"--out", out, "--samples", "4", "--test-loss", "none", "--log-level", "warn")
	if code != 0 {
		t.Fatalf("train: %s", stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[len(lines)-2], "step 30/30 (100.0%)") {
		t.Fatalf("train printed %q, want progress lines ending at step 30/30 and a done line", stdout)
	}
	for _, l := range lines[:len(lines)-1] {
		if !trainLineRE.MatchString(l) {
			t.Errorf("train progress line %q does not match %s", l, trainLineRE)
		}
	}
	if l := lines[len(lines)-1]; !trainDoneRE.MatchString(l) {
		t.Errorf("train's last line %q does not match %s", l, trainDoneRE)
	}
	stdout, stderr, code = gencluster(t, "eval", "--checkpoint", out)
	if code != 0 {
		t.Fatalf("eval: %s", stderr)
	}
	if !regexp.MustCompile(`^vae step 30 on mnist test \(10000 images\): \d+\.\d{3} nats/image, \d\.\d{4} bits/dim\n$`).MatchString(stdout) {
		t.Errorf("eval printed %q", stdout)
	}
	grid := out + "/grid.png"
	stdout, stderr, code = gencluster(t, "sample", "--checkpoint", out, "--n", "4", "--out", grid)
	if code != 0 {
		t.Fatalf("sample: %s", stderr)
	}
	if want := "wrote 4 vae samples (step 30) to " + grid + "\n"; stdout != want {
		t.Errorf("sample printed %q, want %q", stdout, want)
	}
}

// TestProgressTerminal: on a (forced) terminal, the bar shows the counts,
// the rate's unit and the status, and log lines written while it is up
// go above it, through the same writer; after it, to stderr again.
func TestProgressTerminal(t *testing.T) {
	var out, errs bytes.Buffer
	logs := &logSink{w: &errs, terminal: true}
	p := newProgress(&out, true, logs, "train", "steps")
	p.width = 120
	if p.lineDue(true) {
		t.Error("a plain line is due on a terminal")
	}
	for i := int64(1); i <= 40; i++ {
		p.update(i, 40, fmt.Sprintf("loss %d.000", 100-i))
		if i == 20 {
			fmt.Fprintln(logs, "level=INFO msg=\"checkpoint written\" step=20")
		}
	}
	p.finish()
	fmt.Fprintln(logs, "after the bar")
	got := out.String()
	for _, want := range []string{"train", "40/40", "100 %", "steps/s", "done", "loss 60.000", "checkpoint written"} {
		if !strings.Contains(got, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, got)
		}
	}
	// The log line comes before the last bar drawn.
	if i, j := strings.Index(got, "checkpoint written"), strings.LastIndex(got, "40/40"); i < 0 || j < i {
		t.Errorf("log line at %d, last bar at %d: want the line above the bar", i, j)
	}
	if e := errs.String(); e != "after the bar\n" {
		t.Errorf("stderr got %q, want only the line written after the bar", e)
	}

	// Work that stops early leaves the bar where it stopped.
	out.Reset()
	p = newProgress(&out, true, nil, "eval", "images")
	p.width = 100
	p.update(500, 10000, "")
	p.update(1500, 10000, "")
	p.finish()
	if got := out.String(); !strings.Contains(got, "1500/10000") || !strings.Contains(got, "images/s") {
		t.Errorf("stopped bar: %q, want 1500/10000 and images/s", got)
	}
	// A stderr that is not a terminal keeps its log lines.
	errs.Reset()
	logs = &logSink{w: &errs, terminal: false}
	p = newProgress(&out, true, logs, "sample", "pixels")
	p.update(1, 784, "")
	fmt.Fprintln(logs, "to the file")
	p.finish()
	if errs.String() != "to the file\n" {
		t.Errorf("stderr not a terminal: got %q", errs.String())
	}
}

// TestProgressRate: the rate counts from the last update before the work
// moved (a job polled at step 0 while its ring forms, a resumed run), and
// a big jump between two updates weighs what it is worth.
func TestProgressRate(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out, true, nil, "local", "steps")
	p.width = 140
	start := time.Unix(1000, 0)
	clock := start
	p.now = func() time.Time { return clock }
	for _, u := range []struct {
		at   time.Duration
		done int64
	}{{0, 0}, {500 * time.Millisecond, 0}, {1500 * time.Millisecond, 100}, {2500 * time.Millisecond, 400}} {
		clock = start.Add(u.at)
		p.update(u.done, 1000, "workers 2")
	}
	// 400 steps in the 2 s since the last update at step 0.
	if got, want := p.text.Load().show("steps", false), " 200.0 steps/s  eta 3s  workers 2"; got != want {
		t.Errorf("bar text %q, want %q", got, want)
	}
	p.finish()
	if got := out.String(); !strings.Contains(got, "400/1000") || !strings.Contains(got, "200.0 steps/s  eta 3s  workers 2") {
		t.Errorf("bar %q, want 400/1000 at 200.0 steps/s, eta 3s", got)
	}

	// Resumed at 500: its rate is that of this run's steps.
	p = newProgress(&bytes.Buffer{}, true, nil, "train", "steps")
	p.now = func() time.Time { return clock }
	p.update(501, 1000, "")
	clock = clock.Add(time.Second)
	p.update(511, 1000, "")
	if got, want := p.text.Load().show("steps", false), " 10.0 steps/s  eta 49s"; got != want {
		t.Errorf("resumed: bar text %q, want %q", got, want)
	}
	if got := p.text.Load().show("steps", true); got != " 10.0 steps/s  done" {
		t.Errorf("complete: bar text %q", got)
	}
	p.finish()
}
