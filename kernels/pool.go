package kernels

import "sync"

// Pool is a fixed set of goroutines that run the parallel parts of kernels.
// A nil *Pool, or a Pool of one thread, runs everything on the caller's
// goroutine. A Pool is not safe for concurrent use by several callers: one
// model step owns it at a time.
//
// A Pool also owns the per-thread scratch memory of the kernels (packing
// buffers for Sgemm), grown on demand and reused, so that kernels run on a
// non-nil Pool do not allocate in steady state. A nil *Pool has nowhere to
// keep scratch and allocates it on every call.
type Pool struct {
	threads int
	work    chan task
	wg      sync.WaitGroup // helper goroutines
	done    sync.WaitGroup // tasks of the Run in progress
	closed  bool

	// Sgemm state: the arguments of the call in progress (read by every
	// part), the function handed to Run (built once, so Run does not
	// allocate a closure per call) and one scratch area per part.
	gemm    sgemmCall
	gemmFn  func(part, parts int)
	scratch []sgemmScratch
}

type task struct {
	fn    func(part, parts int)
	part  int
	parts int
}

// NewPool starts threads-1 helper goroutines (the caller is the last thread).
// threads < 1 is treated as 1.
func NewPool(threads int) *Pool {
	if threads < 1 {
		threads = 1
	}
	p := &Pool{threads: threads, work: make(chan task)}
	for i := 1; i < threads; i++ {
		p.wg.Add(1)
		go p.loop()
	}
	return p
}

func (p *Pool) loop() {
	defer p.wg.Done()
	for t := range p.work {
		t.fn(t.part, t.parts)
		p.done.Done()
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
	close(p.work)
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
	p.done.Add(parts - 1)
	for i := 1; i < parts; i++ {
		p.work <- task{fn: fn, part: i, parts: parts}
	}
	fn(0, parts)
	p.done.Wait()
}

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
