// Package deploy holds the deployment files (container image, compose,
// Kubernetes); its tests build and run them for real where a Docker engine
// answers, and skip with a clear line where none does.
package deploy

import (
	"encoding/json"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// dockerOrSkip skips the test unless a Docker engine answers.
func dockerOrSkip(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a container image")
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("no Docker engine answers (docker info: %v: %s): skipping the image test", err, strings.TrimSpace(string(out)))
	}
}

// build-image.sh builds an image FROM scratch that runs gencluster as a
// non-root user, with the built-in MNIST inside (train runs with no data
// mounted) and a writable /tmp.
func TestImage(t *testing.T) {
	dockerOrSkip(t)
	const tag = "gencluster:test-image"
	out, err := exec.Command("./build-image.sh", tag).CombinedOutput()
	if err != nil {
		t.Fatalf("build-image.sh: %v\n%s", err, out)
	}
	t.Log(strings.TrimSpace(string(out)))
	t.Cleanup(func() { exec.Command("docker", "image", "rm", "-f", tag).Run() })

	cfg, err := exec.Command("docker", "image", "inspect", "--format", "{{json .Config}}", tag).Output()
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		User       string
		Entrypoint []string
	}
	if err := json.Unmarshal(cfg, &c); err != nil {
		t.Fatal(err)
	}
	if c.User != "65532:65532" || len(c.Entrypoint) != 1 || c.Entrypoint[0] != "/usr/local/bin/gencluster" {
		t.Errorf("image config: user %q, entrypoint %v", c.User, c.Entrypoint)
	}
	v, err := exec.Command("docker", "run", "--rm", tag, "version", "--json").Output()
	if err != nil {
		t.Fatalf("docker run version: %v", err)
	}
	var ver struct{ Platform string }
	if err := json.Unmarshal(v, &ver); err != nil || ver.Platform != "linux/"+runtime.GOARCH {
		t.Errorf("version in the image: %s (%v)", v, err)
	}
	// On the PATH, for `docker exec CONTAINER gencluster ...`.
	if out, err := exec.Command("docker", "run", "--rm", "--entrypoint", "gencluster", tag, "version").CombinedOutput(); err != nil {
		t.Errorf("gencluster on the image's PATH: %v\n%s", err, out)
	}
	tr, err := exec.Command("docker", "run", "--rm", tag, "train", "--model", "vae", "--steps", "2", "--batch", "8", "--samples", "0", "--out", "/tmp/out").CombinedOutput()
	if err != nil || !strings.Contains(string(tr), "done: step 2") {
		t.Errorf("train in the image: %v\n%s", err, tr)
	}
}
