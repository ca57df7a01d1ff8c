package health

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// Over a real listener: /livez answers, /readyz follows the check (503 and
// the reason, then 200), other paths are 404, and Serve returns once ctx
// ends.
func TestServe(t *testing.T) {
	var why atomic.Pointer[string]
	r := "no leader yet"
	why.Store(&r)
	ready := func() error {
		if p := why.Load(); p != nil {
			return errors.New(*p)
		}
		return nil
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, lis, Handler(ready)) }()
	base := "http://" + lis.Addr().String()
	get := func(path string) (int, string) {
		t.Helper()
		res, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get("/livez"); code != 200 || body != "ok\n" {
		t.Errorf("/livez: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "no leader yet") {
		t.Errorf("/readyz not ready: %d %q", code, body)
	}
	why.Store(nil)
	if code, body := get("/readyz"); code != 200 || body != "ok\n" {
		t.Errorf("/readyz ready: %d %q", code, body)
	}
	if code, _ := get("/nothing"); code != 404 {
		t.Errorf("/nothing: %d", code)
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve after ctx ended: %v", err)
	}
}
