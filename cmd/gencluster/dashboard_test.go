package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

var dashboardShot = flag.String("dashboard.screenshot", "", "also save the dashboard test's screenshot here (docs/dashboard.png for the README)")

// chromiumPath finds a headless-capable Chromium, or "".
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestDashboardChromium loads the dashboard of a running `local` cluster
// in a real headless Chromium: the page shows the job's step advancing
// without a reload, both workers with their ranks, the leader, a loss
// curve and the sample grid rank 0 sent with a checkpoint. It saves a
// screenshot (with -dashboard.screenshot, where asked).
func TestDashboardChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	chrome := chromiumPath()
	if chrome == "" {
		t.Skip("dashboard browser test skipped: no chromium on PATH (.ci/run installs Debian's chromium; apt-get install chromium)")
	}
	h := freeAddr(t)
	out := t.TempDir()
	p := startProc(t, "local", "local", "--workers", "2", "--coordinators", "3", "--threads", "1", "--model", "vae", "--batch", "32", "--steps", "1000000",
		"--checkpoint-every", "150", "--out", out, "--http", h, "--log-level", "warn")
	defer p.kill()
	base := "http://" + h
	waitHTTP(t, base+"/api/status", 60*time.Second)

	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 1100),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "profile")))...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelT()

	// poll evaluates a JavaScript expression until it is true.
	poll := func(what, expr string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(90*time.Second), chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
			dump, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("page: %s: not within 90s (%v); page text:\n%s", what, err, dump)
		}
	}
	if _, err := chromedp.Run(ctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatal(err)
	}
	poll("the job's step shows", `Number(document.getElementById("job-step").dataset.step || 0) > 0`)
	step1, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`Number(document.getElementById("job-step").dataset.step)`))
	if err != nil {
		t.Fatal(err)
	}
	poll(fmt.Sprintf("the step advances past %v without a reload", step1), fmt.Sprintf(`Number(document.getElementById("job-step").dataset.step) > %v`, step1))
	poll("two workers, ranks 0 and 1", `(() => { const r = [...document.querySelectorAll("#workers tbody tr")].map(tr => tr.cells[0].textContent); return r.length === 2 && r[0] === "0" && r[1] === "1"; })()`)
	poll("three coordinators, one of them the leader", `(() => { const s = [...document.querySelectorAll("#coordinators tbody tr")].map(tr => tr.cells[2].textContent); return document.getElementById("leader").textContent.startsWith("leader ") && s.length === 3 && s.filter(x => x.startsWith("leader")).length === 1 && s.filter(x => x.startsWith("follower")).length === 2; })()`)
	poll("a loss curve of several points", `(() => { const c = document.querySelector("#loss-plot polyline"); return c !== null && c.getAttribute("points").split(" ").length >= 3; })()`)
	poll("the sample grid loads", `(() => { const i = document.getElementById("sample"); return i.complete && i.naturalWidth > 0 && !i.classList.contains("hidden"); })()`)
	poll("a checkpoint is listed", `document.querySelectorAll("#checkpoints tbody tr td").length >= 4`)

	// What the page shows is what the API says.
	var v struct {
		Job struct {
			Steps int64 `json:"steps"`
		} `json:"job"`
	}
	res, err := http.Get(base + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(res.Body).Decode(&v)
	res.Body.Close()
	var shown string
	if err == nil {
		shown, err = chromedp.Run(ctx, chromedp.Text("#job-steps"))
	}
	if err != nil || shown != fmt.Sprint(v.Job.Steps) {
		t.Fatalf("page says %q steps, the API %d (%v)", shown, v.Job.Steps, err)
	}

	if *dashboardShot != "" {
		// For the README: a job some way in, with a curve to show.
		poll("step 3000 for the screenshot", `Number(document.getElementById("job-step").dataset.step) >= 3000`)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "dashboard.png")
	if *dashboardShot != "" {
		dst = *dashboardShot
	}
	if err := os.WriteFile(dst, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot (%d bytes): %s", len(shot), dst)
}

// waitHTTP polls url until it answers 200.
func waitHTTP(t *testing.T, url string, timeout time.Duration) {
	t.Helper()
	c := http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		res, err := c.Get(url)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("%s", res.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not answering within %v: %v", url, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
