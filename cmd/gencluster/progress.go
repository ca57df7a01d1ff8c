package main

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// progress shows how far one long piece of work is (train's and local's
// steps, sample's pixels, eval's images). On a terminal it is a bar drawn
// by github.com/vbauerster/mpb: done/total, percentage, rate, ETA and a
// status text the command sets. Anywhere else it draws nothing, and the
// command prints its plain progress lines, the ones scripts and tests
// read, when lineDue says so.
//
// The rate is the average since the work first moved in this run, not
// mpb's moving-average decorators: those weigh every update alike, and
// local updates every half second with jumps of a hundred steps, after
// seconds at step 0 while the ring forms; a VAE job doing 60 steps/s
// showed 1.1 steps/s and an ETA of minutes. A resumed run's earlier steps
// do not count either.
//
// Whether stdout is a terminal is decided once, when the app starts
// (app.tty); tests force either mode with newProgress.
type progress struct {
	out      io.Writer
	terminal bool
	name     string // before the bar
	unit     string // of the rate: "steps", "images"
	width    int    // of the whole line; 0: the terminal's
	logs     *logSink
	every    time.Duration // between plain lines

	lastLine time.Time // of the last plain line

	// On a terminal, from the first update on.
	now       func() time.Time
	container *mpb.Progress
	bar       *mpb.Bar
	done      int64
	total     int64
	t0        time.Time // the rate is measured from (t0, done0):
	done0     int64     // the last update before the work moved
	text      atomic.Pointer[barText]
}

// barText is what the bar shows after the percentage.
type barText struct{ rate, eta, status string }

// progress starts showing one piece of work on the app's stdout.
func (a *app) progress(name, unit string) *progress {
	return newProgress(a.stdout, a.tty, a.logs, name, unit)
}

// newProgress is a progress on out, a terminal or not; logs, if not nil,
// is where the logger writes, sent above the bar while one is up.
func newProgress(out io.Writer, terminal bool, logs *logSink, name, unit string) *progress {
	return &progress{out: out, terminal: terminal, logs: logs, name: name, unit: unit, every: 2 * time.Second, now: time.Now}
}

// lineDue says whether the command prints a plain progress line now: never
// on a terminal; else the first time, then once every two seconds, and
// when final (the last step, a job that ended).
func (p *progress) lineDue(final bool) bool {
	if p.terminal || (!final && time.Since(p.lastLine) < p.every) {
		return false
	}
	p.lastLine = time.Now()
	return true
}

// update moves the bar to done of total and sets the status text after
// it; nothing when not on a terminal. The first update draws the bar.
func (p *progress) update(done, total int64, status string) {
	if !p.terminal {
		return
	}
	now := p.now()
	if p.t0.IsZero() || done <= p.done0 { // not moving (yet, or again: a job resumed from a checkpoint)
		p.t0, p.done0 = now, done
	}
	text := barText{rate: "-", eta: "-", status: status}
	if el := now.Sub(p.t0).Seconds(); done > p.done0 && el > 0 {
		r := float64(done-p.done0) / el
		text.rate = fmt.Sprintf("%.1f", r)
		text.eta = time.Duration(float64(total-done) / r * float64(time.Second)).Round(time.Second).String()
	}
	p.text.Store(&text)
	p.done = done
	if p.bar == nil {
		p.start(total)
	} else if total != p.total {
		p.total = total
		p.bar.SetTotal(total, false)
	}
	p.bar.SetCurrent(done)
}

func (p *progress) start(total int64) {
	// ForceTTY and WithAutoRefresh: we decided it is a terminal. mpb
	// would again for a real one, not for the writer of a test that
	// forces one (and v8.16.2's ForceTTY does not turn on the refresh it
	// documents).
	opts := []mpb.ContainerOption{mpb.WithOutput(p.out), mpb.ForceTTY(), mpb.WithAutoRefresh(),
		mpb.WithRefreshRate(200 * time.Millisecond)}
	if p.width > 0 {
		opts = append(opts, mpb.WithWidth(p.width))
	}
	p.container = mpb.New(opts...)
	// Total 0: the bar completes when finish says so, not when done
	// reaches total, so that it stays up, and log lines keep going above
	// it, while the command ends its work (train's test loss, plot and
	// samples after the last step).
	p.bar = p.container.AddBar(0,
		mpb.PrependDecorators(
			decor.Name(p.name+" ", decor.WCSyncSpaceR),
			decor.CountersNoUnit("%d/%d", decor.WCSyncSpaceR),
		),
		mpb.AppendDecorators(
			decor.Percentage(decor.WCSyncSpace),
			decor.Any(func(s decor.Statistics) string { return p.text.Load().show(p.unit, s.Completed) }),
		),
	)
	p.total = total
	p.bar.SetTotal(total, false)
	if p.logs != nil {
		p.logs.above(p.container)
	}
}

// show is the text after the percentage: " 12.5 steps/s  eta 1m3s  loss
// 88.123" ("done" for the ETA once the bar is complete).
func (t *barText) show(unit string, complete bool) string {
	if t == nil {
		return ""
	}
	eta := "eta " + t.eta
	if complete {
		eta = "done"
	}
	s := fmt.Sprintf(" %s %s/s  %s", t.rate, unit, eta)
	if t.status != "" {
		s += "  " + t.status
	}
	return s
}

// finish completes the bar (or leaves it where the work stopped), draws
// it a last time with the log lines still pending and gives the terminal
// back: what is printed next goes below it. It must be called once the
// work is over.
func (p *progress) finish() {
	if p.bar == nil {
		return
	}
	if p.logs != nil {
		p.logs.above(nil)
	}
	// Either ends the bar, which draws its last frame before Wait returns.
	if p.done >= p.total {
		p.bar.SetTotal(-1, true)
	} else {
		p.bar.Abort(false)
	}
	p.container.Wait()
	p.bar, p.container = nil, nil
}

// logOut is where the logger writes: the log sink, or stderr for an app
// made without one (tests).
func (a *app) logOut() io.Writer {
	if a.logs == nil {
		return a.stderr
	}
	return a.logs
}

// logSink is where the logger writes: stderr, or, while a bar is up and
// stderr is the same terminal, the bar's container, which prints each
// line above the bar rather than through it.
type logSink struct {
	mu       sync.Mutex
	w        io.Writer // stderr
	terminal bool      // stderr is a terminal
	via      io.Writer // the bar's container, while one is up
}

func (s *logSink) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.via != nil {
		return s.via.Write(b)
	}
	return s.w.Write(b)
}

// above sends the log lines through c, a bar's container, when stderr is
// a terminal (a file or pipe keeps them); nil sends them to stderr again.
func (s *logSink) above(c io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c != nil && !s.terminal {
		return
	}
	s.via = c
}
