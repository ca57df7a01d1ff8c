// Package health serves a process's liveness and readiness over plain
// HTTP, for Kubernetes probes and compose health checks:
//
//	GET /livez   200 "ok" while the process serves at all
//	GET /readyz  200 "ok" when the process is ready, else 503 and the reason
//
// What "ready" means is the caller's: a coordinator knows a leader and has
// applied what it committed; a worker has joined and built the replica of
// the job it is assigned.
package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Ready says whether the process is ready: nil, or why not.
type Ready func() error

// Handler serves /livez and /readyz on a new mux (other endpoints may be
// added to it).
func Handler(ready Ready) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Serve serves h on lis until ctx ends, then shuts the server down
// (in-flight requests get up to a second).
func Serve(ctx context.Context, lis net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	select {
	case err := <-done:
		return fmt.Errorf("http server on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
