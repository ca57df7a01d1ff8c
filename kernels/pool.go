package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Pool is a fixed set of goroutines that run the parallel parts of kernels.
// A nil *Pool, or a Pool of one thread, runs everything on the caller's
// goroutine. A Pool is not safe for concurrent use by several callers: one
// model step owns it at a time.
//
// A Pool also owns the per-thread scratch memory of the kernels (packing
// buffers for Sgemm), grown on demand and reused, so that kernels run on a
// non-nil Pool do not allocate in steady state. A nil *Pool has nowhere to
// keep scratch and allocates it on every call.
//
// A training step is a few dozen to a few hundred Runs of tens of
// microseconds to milliseconds each, back to back. Handing each one over
// a channel to goroutines that sleep between them cost a wake-up per Run
// and per thread: ~60 µs each on a VM, which made a VAE step on two
// threads slower than on one. So the helpers spin, for up to spinFor,
// watching for the next Run, and only then park; the caller likewise spins
// while it waits for the helpers to finish their parts. Between steps (the
// optimizer, data loading, the all-reduce of a cluster step) they park
// after spinFor and cost nothing.
type Pool struct {
	threads int
	closed  bool
	wg      sync.WaitGroup // helper goroutines

	// The Run in progress: state is the Run's number << 16 | its parts,
	// stored after fn (so a helper that loads it sees fn), and pending the
	// helper parts not yet finished. A helper whose index is not below the
	// parts does not touch fn.
	fn      func(part, parts int)
	state   atomic.Uint64
	pending atomic.Int32
	quit    atomic.Bool
	helpers []poolHelper
	caller  parker      // the caller, parked waiting for the helpers
	doneFn  func() bool // helpersDone, built once

	// Sgemm state: the arguments of the call in progress (read by every
	// part), the function handed to Run (built once, so Run does not
	// allocate a closure per call) and one scratch area per part.
	gemm    sgemmCall
	gemmFn  func(part, parts int)
	scratch []sgemmScratch
}

// parker is a goroutine that may sleep until woken: parked says it is (or
// is about to), wake carries the wake-up (one buffered token, so a wake-up
// sent just before the sleep is not lost; a stale one only makes a later
// wait look once more).
type parker struct {
	parked atomic.Bool
	wake   chan struct{}
}

func newParker() parker { return parker{wake: make(chan struct{}, 1)} }

// unpark wakes the goroutine if it is parked.
func (k *parker) unpark() {
	if k.parked.Load() {
		select {
		case k.wake <- struct{}{}:
		default:
		}
	}
}

// wait returns once ready() holds: it checks, spinning, for up to spinFor,
// then sleeps until unparked and checks again. Whoever makes ready() hold
// calls unpark afterwards; as both flag and condition are atomics, either
// the sleeper sees the condition after raising its flag or the waker sees
// the flag after making the condition hold.
func (k *parker) wait(ready func() bool) {
	start := time.Now()
	for spin := 1; ; spin++ {
		if ready() {
			return
		}
		if spin%128 != 0 {
			continue
		}
		if time.Since(start) < spinFor {
			runtime.Gosched() // let other goroutines of this thread's P run
			continue
		}
		k.parked.Store(true)
		if !ready() {
			<-k.wake
		}
		k.parked.Store(false)
		start = time.Now()
	}
}

type poolHelper struct {
	parker
	p     *Pool
	seen  uint64      // the last Run it saw (state >> 16)
	state uint64      // the state that woke it
	newFn func() bool // newRun, built once
}

// newRun reports whether a Run after the last one seen has started (its
// state left in h.state), or the pool is closing.
func (h *poolHelper) newRun() bool {
	h.state = h.p.state.Load()
	return h.state>>16 != h.seen || h.p.quit.Load()
}

// spinFor is how long an idle thread spins before it sleeps: longer than
// the gaps between the parallel passes of a step, shorter than anything
// the rest of a process would notice.
const spinFor = 500 * time.Microsecond

// NewPool starts threads-1 helper goroutines (the caller is the last thread).
// threads < 1 is treated as 1.
func NewPool(threads int) *Pool {
	if threads < 1 {
		threads = 1
	}
	p := &Pool{threads: threads, caller: newParker()}
	p.doneFn = p.helpersDone
	p.helpers = make([]poolHelper, threads-1)
	for i := range p.helpers {
		h := &p.helpers[i]
		h.parker, h.p = newParker(), p
		h.newFn = h.newRun
		p.wg.Add(1)
		go p.loop(i + 1)
	}
	return p
}

// loop is helper thread i: it runs part i of every Run that has more than
// i parts.
func (p *Pool) loop(i int) {
	defer p.wg.Done()
	h := &p.helpers[i-1]
	for {
		h.wait(h.newFn)
		if p.quit.Load() {
			return
		}
		s := h.state
		h.seen = s >> 16
		if parts := int(s & 0xffff); i < parts {
			p.fn(i, parts)
			if p.pending.Add(-1) == 0 {
				p.caller.unpark()
			}
		}
	}
}

// Threads reports how many threads run work, counting the caller.
func (p *Pool) Threads() int {
	if p == nil {
		return 1
	}
	return p.threads
}

// Close stops the helper goroutines and waits for them to exit.
func (p *Pool) Close() {
	if p == nil || p.closed {
		return
	}
	p.closed = true
	p.quit.Store(true)
	for i := range p.helpers {
		p.helpers[i].unpark()
	}
	p.wg.Wait()
}

// Run calls fn(part, parts) for part = 0..parts-1, spread over the pool's
// threads, and returns when all have finished. parts is min(n, Threads()).
// Part 0 runs on the caller's goroutine. Run itself does not allocate; a
// closure passed as fn may (build it once and reuse it where that matters).
func (p *Pool) Run(n int, fn func(part, parts int)) {
	parts := p.Threads()
	if n < parts {
		parts = n
	}
	if parts <= 1 {
		if n > 0 {
			fn(0, 1)
		}
		return
	}
	p.fn = fn
	p.pending.Store(int32(parts - 1))
	p.state.Store((p.state.Load()>>16+1)<<16 | uint64(parts))
	for i := 0; i < parts-1; i++ {
		p.helpers[i].unpark()
	}
	fn(0, parts)
	p.caller.wait(p.doneFn)
	p.fn = nil
}

// helpersDone reports whether the helper parts of the Run in progress
// have all finished.
func (p *Pool) helpersDone() bool { return p.pending.Load() == 0 }

// Span splits [0, n) into parts nearly equal ranges whose starts are
// multiples of align (except that the last ends at n) and returns range part.
func Span(n, align, part, parts int) (lo, hi int) {
	if align < 1 {
		align = 1
	}
	blocks := (n + align - 1) / align
	lo = blocks * part / parts * align
	hi = blocks * (part + 1) / parts * align
	if lo > n {
		lo = n
	}
	if hi > n {
		hi = n
	}
	return lo, hi
}
