package rafttransport

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"
)

// eventually polls cond every 10ms until it returns nil, failing the test
// with cond's last error after timeout.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		<-tick.C
	}
}

// checkGoroutines records the goroutine count; the returned function,
// called after everything is closed, waits for the count to come back.
func checkGoroutines(t testing.TB) func() {
	base := runtime.NumGoroutine()
	return func() {
		t.Helper()
		if t.Failed() {
			return // transports are still up: Cleanup closes them after this
		}
		eventually(t, 5*time.Second, "goroutines exit after close", func() error {
			if n := runtime.NumGoroutine(); n > base {
				var b strings.Builder
				pprof.Lookup("goroutine").WriteTo(&b, 1)
				return fmt.Errorf("%d before, %d now:\n%s", base, n, b.String())
			}
			return nil
		})
	}
}

// testLogger writes slog records to t.Log until the test ends; stragglers
// cannot log into a finished test.
func testLogger(t testing.TB) *slog.Logger {
	w := &testLogWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	level := slog.LevelInfo
	if os.Getenv("RAFT_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testLogWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
