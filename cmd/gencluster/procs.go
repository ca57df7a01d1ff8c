package main

import (
	"os"
	"runtime"
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
