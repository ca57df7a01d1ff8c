package worker

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadID: a data dir keeps its worker id across restarts; a damaged id
// file is an error naming it, not a new identity.
func TestLoadID(t *testing.T) {
	dir := t.TempDir()
	a, err := loadID(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := loadID(dir)
	if err != nil || a != b {
		t.Fatalf("second start got id %q (%v), first %q", b, err, a)
	}
	other, err := loadID(t.TempDir())
	if err != nil || other == a {
		t.Fatalf("another data dir got id %q (%v), the same as %q", other, err, a)
	}
	if err := os.WriteFile(filepath.Join(dir, "worker-id"), []byte("  \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadID(dir); err == nil || !strings.Contains(err.Error(), "worker-id") {
		t.Errorf("blank id file: %v", err)
	}
}

func TestAdvertised(t *testing.T) {
	got, err := advertised(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7100})
	if err != nil || got != "127.0.0.1:7100" {
		t.Errorf("loopback listener advertised as %q, %v", got, err)
	}
	host, _ := os.Hostname()
	got, err = advertised(&net.TCPAddr{IP: net.IPv4zero, Port: 7100})
	if err != nil || got != net.JoinHostPort(host, "7100") {
		t.Errorf("all-interfaces listener advertised as %q, %v; want the host name %q", got, err, host)
	}
}

func TestNewBadConfig(t *testing.T) {
	if _, err := New(Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "--join") {
		t.Errorf("no coordinators: %v", err)
	}
	if _, err := New(Config{Coordinators: []string{"127.0.0.1:1"}, Listen: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "--data-dir") {
		t.Errorf("no data dir: %v", err)
	}
	if _, err := New(Config{Coordinators: []string{"127.0.0.1:1"}, DataDir: t.TempDir(), Listen: "nonsense"}); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("bad listen address: %v", err)
	}
}
