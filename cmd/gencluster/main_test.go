package main

import (
	"bytes"
	"context"
	endian "encoding/binary"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/gencluster/gencluster/dataset"
	"github.com/gencluster/gencluster/safetensors"
)

func gencluster(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e)
	return o.String(), e.String(), code
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	foreign := filepath.Join(dir, "foreign.db")
	os.WriteFile(foreign, []byte("this is not a checkpoint at all"), 0o644)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"train", "--model", "gan", "--steps", "1", "--out", dir}, "unknown model"},
		{[]string{"train", "--model", "vae", "--dataset", "cifar", "--steps", "1", "--out", dir}, "cifar"},
		{[]string{"train", "--model", "vae", "--dataset", "idx:" + filepath.Join(dir, "nope"), "--steps", "1", "--out", dir}, "nope"},
		{[]string{"train", "--model", "vae", "--steps", "1"}, "--out"},
		{[]string{"train", "--steps", "1", "--out", dir}, "--model"},
		{[]string{"train", "--model", "vae", "--out", dir}, "--steps"},
		{[]string{"train", "--model", "vae", "--steps", "1", "--batch", "0", "--out", dir}, "--batch"},
		{[]string{"train", "--model", "vae", "--steps", "x", "--out", dir}, "steps"},
		{[]string{"train", "--model", "vae", "--bogus", "1"}, "unknown flag"},
		{[]string{"train", "stray"}, "no arguments"},
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"eval", "--checkpoint", filepath.Join(dir, "missing.db")}, "missing.db"},
		{[]string{"eval", "--checkpoint", foreign}, "not a gencluster checkpoint"},
		{[]string{"eval"}, "--checkpoint"},
		{[]string{"eval", "--checkpoint", dir}, "no ckpt"},
		{[]string{"sample", "--checkpoint", foreign, "--out", filepath.Join(dir, "g.png")}, "foreign.db"},
		{[]string{"sample", "--checkpoint", foreign, "--n", "0", "--out", "x.png"}, "--n"},
		{[]string{"export", "--checkpoint", foreign, "--format", "onnx", "--out", "x"}, "onnx"},
		{[]string{"bench", "compute", "--model", "gan"}, "unknown model"},
		{[]string{"train", "--model", "vae", "--levels", "256", "--steps", "1", "--out", dir}, "levels"},
		{[]string{"train", "--model", "pixelcnn", "--levels", "16", "--steps", "1", "--out", dir}, "want 2 or 256"},
		{[]string{"train", "--model", "ae", "--levels", "256", "--steps", "1", "--out", dir}, "no --levels"},
		{[]string{"submit", "--coordinator", "127.0.0.1:1", "--model", "pixelrnn", "--levels", "3", "--steps", "5"}, "levels"},
		{[]string{"local", "--workers", "1", "--model", "vae", "--levels", "256", "--steps", "1"}, "levels"},
		{[]string{"coordinator", "--id", "c1"}, "--listen"},
		{[]string{"coordinator", "--id", "c1", "--listen", "127.0.0.1:0", "--data-dir", dir, "--peers", "c1"}, "not id=host:port"},
		{[]string{"coordinator", "--id", "c1", "--listen", "127.0.0.1:0", "--advertise", "127.0.0.1:17999", "--data-dir", dir}, "peers"},
		{[]string{"submit", "--model", "vae", "--steps", "5"}, "no coordinator address"},
		{[]string{"submit", "--coordinator", "127.0.0.1:1", "--model", "vae", "--steps", "5", "--batch", "0"}, "batch"},
		{[]string{"status", "--coordinator", "nonsense"}, "nonsense"},
		{[]string{"status", "--coordinator", "127.0.0.1:1", "--timeout", "300ms"}, "no coordinator answered"},
		{[]string{"status", "--coordinator", "nosuchhost.invalid:7000,127.0.0.1:1", "--timeout", "300ms"},
			`coordinator 127.0.0.1:1: rpc error: code = Unavailable desc = connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"; coordinator nosuchhost.invalid:7000: host "nosuchhost.invalid" does not resolve`},
		{[]string{"submit", "--coordinator", "127.0.0.1:1", "--model", "vae", "--steps", "5", "--keep", "-1"}, "keep"},
		{[]string{"checkpoint", "bogus"}, "list, get or verify"},
		{[]string{"checkpoint", "list", "--coordinator", "127.0.0.1:1", "--timeout", "300ms"}, "no coordinator answered"},
		{[]string{"checkpoint", "get", "--coordinator", "127.0.0.1:1", "--out", filepath.Join(dir, "c.db")}, "--job"},
		{[]string{"checkpoint", "get", "--coordinator", "127.0.0.1:1", "--job", "job-1"}, "--out"},
		{[]string{"checkpoint", "get", "--coordinator", "127.0.0.1:1", "--job", "job-1", "--out", filepath.Join(dir, "c.db"), "--timeout", "300ms"}, "job-1"},
		{[]string{"checkpoint", "verify"}, "arg"},
		{[]string{"checkpoint", "verify", foreign}, "bad"},
		{[]string{"local", "--workers", "1", "--model", "vae", "--steps", "1", "--keep", "-2"}, "keep"},
	}
	for _, c := range cases {
		_, stderr, code := gencluster(t, c.args...)
		if code == 0 {
			t.Errorf("%v: exit 0", c.args)
			continue
		}
		lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
		if len(lines) != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: stderr %q, want one line mentioning %q", c.args, stderr, c.want)
		}
	}
}

// TestTrainEvalSampleExport runs the four commands end to end on a short VAE job.
func TestTrainEvalSampleExport(t *testing.T) {
	out := t.TempDir()
	stdout, stderr, code := gencluster(t, "train", "--model", "vae", "--batch", "32", "--steps", "40", "--threads", "2", "--out", out, "--samples", "16", "--log-level", "warn")
	if code != 0 {
		t.Fatalf("train: %s", stderr)
	}
	if !strings.Contains(stdout, "step 40/40") || !strings.Contains(stdout, "img/s") {
		t.Fatalf("train progress: %q", stdout)
	}
	stdout, stderr, code = gencluster(t, "eval", "--checkpoint", out, "--json")
	if code != 0 {
		t.Fatalf("eval: %s", stderr)
	}
	var ev map[string]any
	if err := json.Unmarshal([]byte(stdout), &ev); err != nil {
		t.Fatalf("eval --json: %v in %q", err, stdout)
	}
	nats, _ := ev["nll_nats"].(float64)
	bpd, _ := ev["bits_per_dim"].(float64)
	if ev["images"] != 10000.0 || nats < 100 || nats > 543 || bpd < 0.1 || bpd > 1.001 {
		t.Fatalf("eval: %v", ev)
	}
	grid := filepath.Join(out, "grid.png")
	if _, stderr, code = gencluster(t, "sample", "--checkpoint", out, "--n", "9", "--out", grid); code != 0 {
		t.Fatalf("sample: %s", stderr)
	}
	if fi, err := os.Stat(grid); err != nil || fi.Size() == 0 {
		t.Fatalf("grid: %v", err)
	}
	st := filepath.Join(out, "model.safetensors")
	if _, stderr, code = gencluster(t, "export", "--checkpoint", out, "--format", "safetensors", "--out", st); code != 0 {
		t.Fatalf("export: %s", stderr)
	}
	f, err := os.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ts, meta, err := safetensors.Read(f)
	if err != nil {
		t.Fatal(err)
	}
	shapes := map[string][]int{}
	for _, x := range ts {
		shapes[x.Name] = x.Shape
	}
	want := map[string][]int{"e.weight": {400, 784}, "e.bias": {400}, "mu.weight": {20, 400}, "lv.bias": {20}, "d1.weight": {400, 20}, "d2.weight": {784, 400}, "d2.bias": {784}}
	for name, shape := range want {
		if !equalInts(shapes[name], shape) {
			t.Errorf("exported %s has shape %v, want %v", name, shapes[name], shape)
		}
	}
	if len(ts) != 10 || meta["model"] != "vae" {
		t.Errorf("exported %d tensors, meta %v", len(ts), meta)
	}
	checkWithTorch(t, st, "vae", nats, "")
}

// testSubset writes the first n images of the built-in MNIST's test split
// as an IDX directory (test split only) and returns "idx:DIR".
func testSubset(t *testing.T, n int) string {
	t.Helper()
	set, err := dataset.Open("mnist", dataset.Test)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	endian.Write(&b, endian.BigEndian, [4]uint32{0x803, uint32(n), 28, 28})
	b.Write(set.Pix[:n*784])
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "t10k-images-idx3-ubyte"), b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return "idx:" + dir
}

// TestGreyModels runs train, eval, sample and export end to end on the
// models that see grey levels: the autoencoder (eval reports its L2 and,
// with --probe, the linear probe's accuracy; sample draws test images
// beside their reconstructions) and the 256-level PixelCNN (eval in nats
// and bits/dim near 8 bits at the start); PyTorch computes the same test
// loss from each export.
func TestGreyModels(t *testing.T) {
	out := t.TempDir()
	if _, stderr, code := gencluster(t, "train", "--model", "ae", "--batch", "64", "--steps", "300", "--threads", "2", "--out", out, "--samples", "4", "--log-level", "warn"); code != 0 {
		t.Fatalf("train ae: %s", stderr)
	}
	stdout, stderr, code := gencluster(t, "eval", "--checkpoint", out, "--probe", "--json", "--log-level", "warn")
	if code != 0 {
		t.Fatalf("eval ae: %s", stderr)
	}
	var ev map[string]any
	if err := json.Unmarshal([]byte(stdout), &ev); err != nil {
		t.Fatalf("eval --json: %v in %q", err, stdout)
	}
	l2, _ := ev["l2_per_image"].(float64)
	acc, _ := ev["probe_accuracy"].(float64)
	// An untrained autoencoder's output is ~0.5 everywhere: ~52 per image; 300 steps bring it below 30.
	if _, ok := ev["nll_nats"]; ok || ev["model"] != "ae" || l2 < 5 || l2 > 30 || acc < 0.3 || acc > 1 {
		t.Fatalf("eval ae: %v", ev)
	}
	grid := filepath.Join(out, "grid.png")
	if _, stderr, code = gencluster(t, "sample", "--checkpoint", out, "--n", "4", "--out", grid); code != 0 {
		t.Fatalf("sample ae: %s", stderr)
	}
	f, err := os.Open(grid)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	// 2x2 cells of an image, a grey column and its reconstruction, scaled 2x.
	if w, h := img.Bounds().Dx(), img.Bounds().Dy(); w != 2*2*57+2 || h != 2*2*28+2 {
		t.Fatalf("ae grid is %dx%d", w, h)
	}
	st := filepath.Join(out, "ae.safetensors")
	if _, stderr, code = gencluster(t, "export", "--checkpoint", out, "--out", st); code != 0 {
		t.Fatalf("export ae: %s", stderr)
	}
	checkWithTorch(t, st, "ae", l2, "")
	if _, stderr, code = gencluster(t, "eval", "--checkpoint", out, "--probe", "--dataset", testSubset(t, 50)); code == 0 || !strings.Contains(stderr, "train-images") {
		t.Fatalf("probe without a train split: exit %d, %s", code, stderr)
	}

	// pixelcnn --levels 256, evaluated on 100 test images.
	out = t.TempDir()
	if _, stderr, code := gencluster(t, "train", "--model", "pixelcnn", "--levels", "256", "--batch", "8", "--steps", "3", "--threads", "2", "--out", out, "--samples", "0", "--test-loss", "none", "--log-level", "warn"); code != 0 {
		t.Fatalf("train pixelcnn/256: %s", stderr)
	}
	sub := testSubset(t, 100)
	stdout, stderr, code = gencluster(t, "eval", "--checkpoint", out, "--dataset", sub, "--json", "--log-level", "warn")
	if code != 0 {
		t.Fatalf("eval pixelcnn/256: %s", stderr)
	}
	ev = nil
	if err := json.Unmarshal([]byte(stdout), &ev); err != nil {
		t.Fatalf("eval --json: %v in %q", err, stdout)
	}
	nats, _ := ev["nll_nats"].(float64)
	bpd, _ := ev["bits_per_dim"].(float64)
	if ev["levels"] != 256.0 || bpd < 2 || bpd > 8.5 || nats < 784*2*math.Ln2 {
		t.Fatalf("eval pixelcnn/256: %v", ev)
	}
	if _, stderr, code = gencluster(t, "sample", "--checkpoint", out, "--n", "1", "--out", filepath.Join(out, "g.png")); code != 0 {
		t.Fatalf("sample pixelcnn/256: %s", stderr)
	}
	st = filepath.Join(out, "p.safetensors")
	if _, stderr, code = gencluster(t, "export", "--checkpoint", out, "--out", st); code != 0 {
		t.Fatalf("export pixelcnn/256: %s", stderr)
	}
	checkWithTorch(t, st, "pixelcnn/256", nats, strings.TrimPrefix(sub, "idx:"))
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestPixelRNNExport: a PixelRNN, of 2 and of 256 levels, trained a few
// steps, exported, gives PyTorch's definition of the model our test loss.
func TestPixelRNNExport(t *testing.T) {
	sub := testSubset(t, 100)
	for _, levels := range []string{"2", "256"} {
		out := t.TempDir()
		if _, stderr, code := gencluster(t, "train", "--model", "pixelrnn", "--levels", levels, "--batch", "8", "--steps", "3", "--threads", "2", "--out", out, "--samples", "2", "--test-loss", "none", "--log-level", "warn"); code != 0 {
			t.Fatalf("train pixelrnn --levels %s: %s", levels, stderr)
		}
		stdout, stderr, code := gencluster(t, "eval", "--checkpoint", out, "--dataset", sub, "--json", "--log-level", "warn")
		if code != 0 {
			t.Fatalf("eval pixelrnn --levels %s: %s", levels, stderr)
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(stdout), &ev); err != nil {
			t.Fatalf("eval --json: %v in %q", err, stdout)
		}
		nats, _ := ev["nll_nats"].(float64)
		if ev["model"] != "pixelrnn" || !(nats > 50) {
			t.Fatalf("eval pixelrnn --levels %s: %v", levels, ev)
		}
		st := filepath.Join(out, "m.safetensors")
		if _, stderr, code = gencluster(t, "export", "--checkpoint", out, "--out", st); code != 0 {
			t.Fatalf("export pixelrnn: %s", stderr)
		}
		model := "pixelrnn"
		if levels == "256" {
			model = "pixelrnn/256"
		}
		checkWithTorch(t, st, model, nats, strings.TrimPrefix(sub, "idx:"))
	}
}

// checkWithTorch loads the export into scripts/torch_reference.py's model
// (scripts/torch_load_check.py) and compares its test loss with ours. It
// needs /usr/bin/python3 with torch and numpy (Debian's python3-torch);
// without them it says so and skips.
func checkWithTorch(t *testing.T, file, model string, ours float64, mnistDir string) {
	if err := exec.Command("/usr/bin/python3", "-c", "import torch, numpy").Run(); err != nil {
		t.Log("skipping the PyTorch load check: /usr/bin/python3 has no torch (apt-get install python3-torch)")
		return
	}
	script, _ := filepath.Abs("../../scripts/torch_load_check.py")
	mnist, _ := filepath.Abs("../../dataset/mnistdata")
	if mnistDir != "" {
		mnist = mnistDir
	}
	cmd := exec.Command("/usr/bin/python3", script, model, file)
	cmd.Env = append(os.Environ(), "MNIST_DIR="+mnist)
	outb, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("torch load check: %v\n%s", err, outb)
	}
	var r struct {
		TestNats float64 `json:"test_nats"`
	}
	lines := strings.Split(strings.TrimSpace(string(outb)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		t.Fatalf("torch load check output %q: %v", outb, err)
	}
	// The VAE's loss is stochastic (different noise in torch): allow 1%.
	tol := 1e-3 * ours
	if model == "vae" {
		tol = 1e-2 * ours
	}
	if d := r.TestNats - ours; d > tol || d < -tol {
		t.Fatalf("PyTorch computes %.4f nats on the exported weights, gencluster %.4f", r.TestNats, ours)
	}
	t.Logf("PyTorch: %.4f nats, gencluster: %.4f", r.TestNats, ours)
}

// version --json names the toolchain and platform (and the revision, when
// the build stamps it: not under GOFLAGS=-buildvcs=false).
func TestVersion(t *testing.T) {
	b, err := exec.Command(binary, "version", "--json").Output()
	if err != nil {
		t.Fatalf("version: %v", err)
	}
	out := string(b)
	var v versionJSON
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("version --json: %v in %q", err, out)
	}
	if v.Go != runtime.Version() || v.Platform != runtime.GOOS+"/"+runtime.GOARCH || v.Version == "" {
		t.Errorf("version --json: %+v", v)
	}
	if v.Revision != "" && len(v.Revision) != 40 {
		t.Errorf("revision %q", v.Revision)
	}
}
