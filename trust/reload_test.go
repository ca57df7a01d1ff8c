package trust

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// reloadTimeout bounds how long a reload may take to show in handshakes.
const reloadTimeout = 2 * time.Second

// TestReloadRotatedCert replaces the server's certificate while it runs;
// new handshakes present the new one without a restart.
func TestReloadRotatedCert(t *testing.T) {
	dir := newPKI(t)
	folder := filepath.Join(dir, "coordinator")
	log, logs := testLogger()
	srv := mustLoad(t, folder, log)
	cli := mustLoad(t, filepath.Join(dir, "worker"), nil)
	addr := startTLSServer(t, srv.ServerTLS())

	first, err := handshake(addr, cli.ClientTLS(Coordinator))
	if err != nil {
		t.Fatal(err)
	}
	if err := Issue(dir, Coordinator, []string{"coord-new"}, folder, IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	want := readLeaf(t, filepath.Join(folder, CertFile))
	if want.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("Issue did not change the certificate")
	}
	eventually(t, reloadTimeout, func() error {
		got, err := handshake(addr, cli.ClientTLS(Coordinator))
		if err != nil {
			return err
		}
		if got.SerialNumber.Cmp(want.SerialNumber) != 0 {
			return fmt.Errorf("server still presents serial %x", got.SerialNumber)
		}
		return nil
	})
	if !strings.Contains(logs.String(), "reloaded credentials") || !strings.Contains(logs.String(), "name=coord-new") {
		t.Errorf("reload not logged:\n%s", logs.String())
	}
}

// TestReloadNewCA moves server and client to a new CA while the server
// runs; new handshakes use the new CA and certificates, and a client still
// holding the old CA's certificate is refused.
func TestReloadNewCA(t *testing.T) {
	dir := newPKI(t)
	newCA := newPKI(t)
	srvFolder := filepath.Join(dir, "coordinator")
	cliFolder := filepath.Join(dir, "worker")
	oldCliFolder := filepath.Join(t.TempDir(), "old-worker")
	copyFolder(t, cliFolder, oldCliFolder)

	srv := mustLoad(t, srvFolder, nil)
	cli := mustLoad(t, cliFolder, nil)
	oldCli := mustLoad(t, oldCliFolder, nil)
	addr := startTLSServer(t, srv.ServerTLS())
	if _, err := handshake(addr, cli.ClientTLS(Coordinator)); err != nil {
		t.Fatal(err)
	}

	if err := Issue(newCA, Coordinator, nil, srvFolder, IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := Issue(newCA, Worker, nil, cliFolder, IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	ca := readLeaf(t, filepath.Join(newCA, CACertFile))
	eventually(t, reloadTimeout, func() error {
		got, err := handshake(addr, cli.ClientTLS(Coordinator))
		if err != nil {
			return err
		}
		if !bytes.Equal(got.RawIssuer, ca.RawSubject) || got.CheckSignatureFrom(ca) != nil {
			return fmt.Errorf("server certificate %x not yet from the new CA", got.SerialNumber)
		}
		return nil
	})
	if _, err := handshake(addr, oldCli.ClientTLS(Coordinator)); err == nil {
		t.Error("a client with the old CA's certificate was accepted after the CA rotation")
	}
}

// TestReloadBrokenKeepsOld replaces the certificate with garbage: the old
// material keeps working and one warning is logged; a good replacement
// afterwards is picked up.
func TestReloadBrokenKeepsOld(t *testing.T) {
	dir := newPKI(t)
	folder := filepath.Join(dir, "coordinator")
	log, logs := testLogger()
	srv := mustLoad(t, folder, log)
	cli := mustLoad(t, filepath.Join(dir, "worker"), nil)
	addr := startTLSServer(t, srv.ServerTLS())
	first, err := handshake(addr, cli.ClientTLS(Coordinator))
	if err != nil {
		t.Fatal(err)
	}

	if err := writeFileAtomic(filepath.Join(folder, CertFile), []byte("garbage\n"), 0o644, false); err != nil {
		t.Fatal(err)
	}
	eventually(t, reloadTimeout, func() error {
		if _, err := handshake(addr, cli.ClientTLS(Coordinator)); err != nil {
			return fmt.Errorf("handshake with the old material failed: %w", err)
		}
		if !strings.Contains(logs.String(), "reloading credentials failed") {
			return errNotYet
		}
		return nil
	})
	out := logs.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, filepath.Join(folder, CertFile)) {
		t.Errorf("warning does not name the file:\n%s", out)
	}
	// Further handshakes, past several check intervals, still use the old
	// certificate and do not repeat the warning.
	for i := 0; i < 5; i++ {
		time.Sleep(testInterval + 5*time.Millisecond)
		got, err := handshake(addr, cli.ClientTLS(Coordinator))
		if err != nil {
			t.Fatalf("handshake %d with the old material: %v", i, err)
		}
		if got.SerialNumber.Cmp(first.SerialNumber) != 0 {
			t.Fatalf("server switched to serial %x", got.SerialNumber)
		}
	}
	if n := strings.Count(logs.String(), "reloading credentials failed"); n != 1 {
		t.Errorf("%d reload warnings for one broken change, want 1:\n%s", n, logs.String())
	}

	// Repair: a good certificate is picked up.
	if err := Issue(dir, Coordinator, nil, folder, IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	want := readLeaf(t, filepath.Join(folder, CertFile))
	eventually(t, reloadTimeout, func() error {
		got, err := handshake(addr, cli.ClientTLS(Coordinator))
		if err != nil {
			return err
		}
		if got.SerialNumber.Cmp(want.SerialNumber) != 0 {
			return errNotYet
		}
		return nil
	})
}

// TestReloadRefusesRoleChange checks that a folder cannot change role
// under a running process.
func TestReloadRefusesRoleChange(t *testing.T) {
	dir := newPKI(t)
	folder := filepath.Join(dir, "coordinator")
	log, logs := testLogger()
	srv := mustLoad(t, folder, log)
	cli := mustLoad(t, filepath.Join(dir, "worker"), nil)
	addr := startTLSServer(t, srv.ServerTLS())

	if err := Issue(dir, Worker, nil, folder, IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, reloadTimeout, func() error {
		if _, err := handshake(addr, cli.ClientTLS(Coordinator)); err != nil {
			return err
		}
		if !strings.Contains(logs.String(), "now carries role worker") {
			return errNotYet
		}
		return nil
	})
	if srv.Role() != Coordinator {
		t.Errorf("Role() = %q after a refused role change", srv.Role())
	}
}

// TestReloadRespectsInterval checks that files are not re-read before the
// check interval has passed.
func TestReloadRespectsInterval(t *testing.T) {
	dir := newPKI(t)
	folder := filepath.Join(dir, "coordinator")
	srv, err := load(folder, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if d := mustDefault(t, filepath.Join(dir, "worker")); d != time.Second {
		t.Errorf("Load's interval %v, want 1s", d)
	}
	cli := mustLoad(t, filepath.Join(dir, "worker"), nil)
	addr := startTLSServer(t, srv.ServerTLS())
	first, err := handshake(addr, cli.ClientTLS(Coordinator))
	if err != nil {
		t.Fatal(err)
	}
	if err := Issue(dir, Coordinator, nil, folder, IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		got, err := handshake(addr, cli.ClientTLS(Coordinator))
		if err != nil {
			t.Fatal(err)
		}
		if got.SerialNumber.Cmp(first.SerialNumber) != 0 {
			t.Fatal("files were re-read before the check interval passed")
		}
	}
}

func mustDefault(t *testing.T, folder string) time.Duration {
	t.Helper()
	c, err := Load(folder, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c.interval
}
