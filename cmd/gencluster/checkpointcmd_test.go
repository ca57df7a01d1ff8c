package main

import (
	"bytes"
	bin "encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/checkpoint"
)

// marker is the value every tensor of testCheckpoint holds, so that a
// test can find (and damage) the tensor bytes in the file.
const marker = float32(1.5)

// testCheckpoint writes a small checkpoint of step at path and returns
// its checksum.
func testCheckpoint(t *testing.T, path string, step int64) string {
	t.Helper()
	st := &checkpoint.State{Meta: checkpoint.Meta{Job: checkpoint.Job{Model: "vae", Dataset: "mnist", Batch: 8, TotalSteps: 100, Seed: 1, LR: 1e-3},
		Step: step, Created: time.Unix(1700000000, 0).UTC()}}
	for _, name := range []string{"param/a.weight", "adam.m/a.weight", "adam.v/a.weight"} {
		d := make([]float32, 3000)
		for i := range d {
			d[i] = marker
		}
		st.Meta.Tensors = append(st.Meta.Tensors, checkpoint.TensorInfo{Name: name, Shape: []int{30, 100}})
		st.Data = append(st.Data, d)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	sum, err := checkpoint.Write(path, st)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// flipTensorByte damages one byte of a tensor's values in the file.
func flipTensorByte(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var run [64]byte
	for i := 0; i < len(run); i += 4 {
		bin.LittleEndian.PutUint32(run[i:], math.Float32bits(marker))
	}
	i := bytes.Index(b, run[:])
	if i < 0 {
		t.Fatal("tensor values not found in the file")
	}
	b[i+33] ^= 0x01
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCheckpointVerify: verify passes a good file, fails a damaged or
// truncated one (one line on stderr, exit 1), checks every *.db under a
// directory (skipping temp files), and fails a directory without any.
func TestCheckpointVerify(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "ckpt-0000000010.db")
	sum := testCheckpoint(t, good, 10)
	stdout, stderr, code := gencluster(t, "checkpoint", "verify", good)
	if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "ok ") || !strings.Contains(stdout, "step 10") ||
		!strings.Contains(stdout, "vae") || !strings.Contains(stdout, sum) {
		t.Fatalf("good file: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	oneBadLine := func(what, stdout, stderr string, code int, want string) {
		t.Helper()
		lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
		if code == 0 || len(lines) != 1 || !strings.Contains(stderr, "bad") {
			t.Errorf("%s: exit %d, stderr %q; want exit 1 and one line saying it is bad", what, code, stderr)
		}
		if !strings.Contains(stdout, "BAD") || !strings.Contains(stdout, want) {
			t.Errorf("%s: stdout %q, want a BAD line mentioning %q", what, stdout, want)
		}
	}
	flipped := filepath.Join(dir, "flipped", "ckpt-0000000020.db")
	testCheckpoint(t, flipped, 20)
	flipTensorByte(t, flipped)
	stdout, stderr, code = gencluster(t, "checkpoint", "verify", flipped)
	oneBadLine("flipped byte", stdout, stderr, code, "checksum")

	truncated := filepath.Join(dir, "truncated", "ckpt-0000000030.db")
	testCheckpoint(t, truncated, 30)
	fi, err := os.Stat(truncated)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(truncated, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code = gencluster(t, "checkpoint", "verify", truncated)
	oneBadLine("truncated file", stdout, stderr, code, truncated)

	// A store's name carries the checksum's first 12 hex digits: a file
	// whose name disagrees with its contents is bad.
	misnamed := filepath.Join(dir, "store", "job-1", "ckpt-0000000040-000000000000.db")
	testCheckpoint(t, misnamed, 40)
	stdout, stderr, code = gencluster(t, "checkpoint", "verify", misnamed)
	oneBadLine("misnamed file", stdout, stderr, code, "name says")
	tmp := filepath.Join(t.TempDir(), "c.db")
	sum50 := testCheckpoint(t, tmp, 50)
	named := filepath.Join(dir, "store", "job-1", "ckpt-0000000050-"+sum50[:12]+".db")
	if err := os.Rename(tmp, named); err != nil {
		t.Fatal(err)
	}
	if stdout, stderr, code = gencluster(t, "checkpoint", "verify", named); code != 0 {
		t.Errorf("store-named file: exit %d, %q %q", code, stdout, stderr)
	}

	// The whole directory: every *.db below it, temp files skipped.
	if err := os.WriteFile(filepath.Join(dir, "store", "job-1", "ckpt-0000000060.db.tmp-123"), []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code = gencluster(t, "checkpoint", "verify", dir, "--json")
	var rs []verifyJSON
	if err := json.Unmarshal([]byte(stdout), &rs); err != nil {
		t.Fatalf("verify --json: %v in %q", err, stdout)
	}
	ok := map[string]bool{}
	for _, r := range rs {
		ok[filepath.Base(r.File)] = r.OK
		if r.OK == (r.Error != "") {
			t.Errorf("%+v: ok and error disagree", r)
		}
	}
	want := map[string]bool{"ckpt-0000000010.db": true, "ckpt-0000000020.db": false, "ckpt-0000000030.db": false,
		"ckpt-0000000040-000000000000.db": false, filepath.Base(named): true}
	if len(ok) != len(want) {
		t.Errorf("verify of the directory checked %v, want %v", ok, want)
	}
	for f, w := range want {
		if g, found := ok[f]; !found || g != w {
			t.Errorf("%s: ok %v (checked %v), want %v", f, g, found, w)
		}
	}
	if code == 0 || !strings.Contains(stderr, "3 of 5 checkpoint files are bad") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("directory: exit %d, stderr %q", code, stderr)
	}
	// Text: one line per file.
	stdout, _, _ = gencluster(t, "checkpoint", "verify", dir)
	if n := strings.Count(stdout, "\n"); n != 5 || strings.Count(stdout, "BAD") != 3 {
		t.Errorf("directory, text: %d lines:\n%s", n, stdout)
	}

	empty := t.TempDir()
	_, stderr, code = gencluster(t, "checkpoint", "verify", empty)
	if code == 0 || !strings.Contains(stderr, "no checkpoint files") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("empty directory: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = gencluster(t, "checkpoint", "verify", filepath.Join(dir, "missing.db"))
	if code == 0 || !strings.Contains(stderr, "missing.db") {
		t.Errorf("missing file: exit %d, stderr %q", code, stderr)
	}
}

// TestStatusCheckpointFields: status shows the last checkpoint's size and
// holders, in JSON and in text.
func TestStatusCheckpointFields(t *testing.T) {
	r := &pb.StatusResponse{Jobs: []*pb.JobInfo{{Id: "job-1", State: "running", Spec: &pb.JobSpec{Model: "vae", Steps: 100},
		LastCheckpoint: &pb.CheckpointInfo{Step: 50, TimeUnixMs: 1700000000000, Checksum: "abc", SizeBytes: 7_812_345, Holders: []string{"c0", "c2"}}}}}
	s := toStatusJSON(r)
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	lc, _ := m["last_checkpoint"].(map[string]any)
	if lc["size_bytes"] != 7812345.0 || len(lc["holders"].([]any)) != 2 || lc["step"] != 50.0 || lc["checksum"] != "abc" {
		t.Errorf("last_checkpoint: %v", lc)
	}
	var out bytes.Buffer
	printStatus(&app{stdout: &out}, s)
	if !strings.Contains(out.String(), "7.8 MB") || !strings.Contains(out.String(), "held by c0,c2") {
		t.Errorf("status text: %q", out.String())
	}
}
