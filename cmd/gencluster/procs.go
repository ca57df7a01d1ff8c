package main

import (
	"os"
	"runtime"
	"runtime/debug"
)

// reserveProcs raises GOMAXPROCS to at least n, unless the user set the
// GOMAXPROCS environment variable. A worker's compute threads keep their
// Ps busy for a whole backward pass; the ring's sender, reader and gRPC
// goroutines need Ps of their own to run at once, not after a compute
// thread is preempted (up to 10 ms later), or the all-reduce meant to
// overlap backward waits behind it. So a process asks for one P per
// compute thread plus one per ring member it runs, and the operating
// system shares the cores among the threads as it does among processes.
func reserveProcs(n int) {
	if _, set := os.LookupEnv("GOMAXPROCS"); set || n <= runtime.GOMAXPROCS(0) {
		return
	}
	runtime.GOMAXPROCS(n)
}

// trainingGCPercent is the collector's headroom (GOGC) of the processes
// that train: train, worker and local.
const trainingGCPercent = 25

// lowerGCHeadroom sets GOGC to trainingGCPercent unless the user set the
// GOGC environment variable. A training process's heap is mostly
// long-lived and pointer-free (the data set, the tensors), a step
// allocates next to nothing, and a checkpoint leaves bursts of garbage:
// with the default of 100 the heap may grow to twice a live heap that is
// mostly the data set before a collection, while a collection here costs
// little (pointer-free objects are not scanned).
func lowerGCHeadroom() {
	if _, set := os.LookupEnv("GOGC"); set {
		return
	}
	debug.SetGCPercent(trainingGCPercent)
}
