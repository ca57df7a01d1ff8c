package trust

import (
	"bytes"
	"crypto/x509"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseRole(t *testing.T) {
	for _, r := range Roles() {
		got, err := ParseRole(string(r))
		if err != nil || got != r {
			t.Errorf("ParseRole(%q) = %q, %v", r, got, err)
		}
	}
	for _, s := range []string{"", "admin", "Coordinator", " worker"} {
		if _, err := ParseRole(s); err == nil {
			t.Errorf("ParseRole(%q) succeeded, want error", s)
		}
	}
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestInitLayout checks the files Init writes, their modes, and that every
// certificate carries its role and the promised SANs.
func TestInitLayout(t *testing.T) {
	dir := newPKI(t)

	if m := mode(t, dir); m != 0o700 {
		t.Errorf("%s mode %v, want 0700", dir, m)
	}
	if m := mode(t, filepath.Join(dir, CAKeyFile)); m != 0o600 {
		t.Errorf("ca.key mode %v, want 0600", m)
	}
	ca := readLeaf(t, filepath.Join(dir, CACertFile))
	if !ca.IsCA || ca.NotAfter.Sub(ca.NotBefore) < 9*365*24*time.Hour {
		t.Errorf("CA: IsCA=%v validity %v, want a CA valid ~10 years", ca.IsCA, ca.NotAfter.Sub(ca.NotBefore))
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}

	for _, role := range Roles() {
		folder := filepath.Join(dir, string(role))
		if m := mode(t, folder); m != 0o700 {
			t.Errorf("%s mode %v, want 0700", folder, m)
		}
		if m := mode(t, filepath.Join(folder, KeyFile)); m != 0o600 {
			t.Errorf("%s/tls.key mode %v, want 0600", role, m)
		}
		entries, err := os.ReadDir(folder)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if want := []string{CACertFile, CertFile, KeyFile}; !slices.Equal(names, want) {
			t.Errorf("%s holds %q, want %q (no temporary files left)", folder, names, want)
		}
		if got, _ := os.ReadFile(filepath.Join(folder, CACertFile)); !bytes.Equal(got, caPEM) {
			t.Errorf("%s/ca.crt differs from the CA's ca.crt", role)
		}

		leaf := readLeaf(t, filepath.Join(folder, CertFile))
		got, err := roleOf(leaf)
		if err != nil || got != role {
			t.Errorf("%s certificate role = %q, %v", role, got, err)
		}
		if leaf.Subject.CommonName != string(role) {
			t.Errorf("%s certificate CN = %q, want the role", role, leaf.Subject.CommonName)
		}
		if !slices.Equal(leaf.Subject.OrganizationalUnit, []string{string(role)}) {
			t.Errorf("%s certificate OU = %q", role, leaf.Subject.OrganizationalUnit)
		}
		if err := leaf.CheckSignatureFrom(ca); err != nil {
			t.Errorf("%s certificate not signed by the CA: %v", role, err)
		}
		if v := leaf.NotAfter.Sub(leaf.NotBefore); v < 364*24*time.Hour || v > 366*24*time.Hour {
			t.Errorf("%s certificate validity %v, want ~1 year", role, v)
		}

		wantDNS := []string{"localhost"}
		wantIPs := []string{"127.0.0.1"}
		if role == Coordinator {
			wantDNS = []string{"coord.example", "localhost"}
			wantIPs = []string{"10.0.0.1", "127.0.0.1", "::1"}
		}
		if !slices.Equal(leaf.DNSNames, wantDNS) {
			t.Errorf("%s DNS SANs %q, want %q", role, leaf.DNSNames, wantDNS)
		}
		var ips []string
		for _, ip := range leaf.IPAddresses {
			ips = append(ips, ip.String())
		}
		if !slices.Equal(ips, wantIPs) {
			t.Errorf("%s IP SANs %q, want %q", role, ips, wantIPs)
		}

		c, err := Load(folder, nil)
		if err != nil {
			t.Fatalf("Load(%s): %v", folder, err)
		}
		if c.Role() != role {
			t.Errorf("Load(%s).Role() = %q", folder, c.Role())
		}
	}
}

// TestInitRefusesExistingCA checks that Init never overwrites a CA and
// names the file it found.
func TestInitRefusesExistingCA(t *testing.T) {
	dir := newPKI(t)
	caKey := filepath.Join(dir, CAKeyFile)
	before, err := os.ReadFile(caKey)
	if err != nil {
		t.Fatal(err)
	}

	err = Init(dir, nil, IssueOptions{})
	wantErrContains(t, err, filepath.Join(dir, CACertFile), "refusing")
	if !errors.Is(err, fs.ErrExist) {
		t.Errorf("error %v does not wrap fs.ErrExist", err)
	}

	// With only ca.key left, Init still refuses, naming ca.key.
	if err := os.Remove(filepath.Join(dir, CACertFile)); err != nil {
		t.Fatal(err)
	}
	wantErrContains(t, Init(dir, nil, IssueOptions{}), caKey)

	after, err := os.ReadFile(caKey)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("ca.key was modified by a refused Init")
	}
}

func TestInitRejectsBadInput(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	wantErrContains(t, Init(dir, []string{"coord:9000"}, IssueOptions{}), "coord:9000")
	wantErrContains(t, Init(dir, []string{""}, IssueOptions{}), "empty host")
	wantErrContains(t, Init(dir, nil, IssueOptions{Validity: -time.Hour}), "negative validity")
	if _, err := os.Stat(filepath.Join(dir, CACertFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused Init left %s behind (stat: %v)", CACertFile, err)
	}

	// A role folder that cannot be created: Init fails naming it and
	// removes the new CA, so it can be retried.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	blocker := filepath.Join(dir, string(Worker))
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	wantErrContains(t, Init(dir, nil, IssueOptions{}), blocker)
	for _, name := range []string{CACertFile, CAKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a failed Init left %s behind (stat: %v)", name, err)
		}
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	if err := Init(dir, nil, IssueOptions{}); err != nil {
		t.Errorf("Init retried after a failure: %v", err)
	}
}

// TestIssue checks that Issue adds a folder with the requested role, hosts
// and validity, and that issuing into it again rotates the certificate.
func TestIssue(t *testing.T) {
	dir := newPKI(t)
	folder := filepath.Join(t.TempDir(), "deep", "ring-3")
	hosts := []string{"worker-3.ring", "10.1.2.3", "[fd00::3]", "worker-3.ring"}
	if err := Issue(dir, Worker, hosts, folder, IssueOptions{Validity: time.Hour}); err != nil {
		t.Fatalf("Issue: %v", err)
	}
	if m := mode(t, folder); m != 0o700 {
		t.Errorf("%s mode %v, want 0700", folder, m)
	}
	if m := mode(t, filepath.Join(folder, KeyFile)); m != 0o600 {
		t.Errorf("tls.key mode %v, want 0600", m)
	}
	leaf := readLeaf(t, filepath.Join(folder, CertFile))
	if r, err := roleOf(leaf); err != nil || r != Worker {
		t.Errorf("role = %q, %v; want worker", r, err)
	}
	if leaf.Subject.CommonName != "worker-3.ring" {
		t.Errorf("CN = %q, want the first host", leaf.Subject.CommonName)
	}
	if !slices.Equal(leaf.DNSNames, []string{"worker-3.ring"}) {
		t.Errorf("DNS SANs %q", leaf.DNSNames)
	}
	if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(net.ParseIP("10.1.2.3")) || !leaf.IPAddresses[1].Equal(net.ParseIP("fd00::3")) {
		t.Errorf("IP SANs %v", leaf.IPAddresses)
	}
	if v := leaf.NotAfter.Sub(leaf.NotBefore); v < time.Hour || v > time.Hour+backdate+time.Second {
		t.Errorf("validity %v, want 1h (+ backdate)", v)
	}
	c, err := Load(folder, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Role() != Worker {
		t.Errorf("Role() = %q", c.Role())
	}

	// Issuing again into the same folder replaces the certificate.
	if err := Issue(dir, Worker, nil, folder, IssueOptions{}); err != nil {
		t.Fatalf("Issue (rotation): %v", err)
	}
	rotated := readLeaf(t, filepath.Join(folder, CertFile))
	if rotated.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("rotation kept the old certificate")
	}
	if rotated.Subject.CommonName != "worker" {
		t.Errorf("CN without hosts = %q, want the role", rotated.Subject.CommonName)
	}
	if _, err := Load(folder, nil); err != nil {
		t.Errorf("Load after rotation: %v", err)
	}

	// A coordinator issued with Issue always gets the loopback names.
	cfolder := filepath.Join(t.TempDir(), "coord-2")
	if err := Issue(dir, Coordinator, []string{"coord-2"}, cfolder, IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	cleaf := readLeaf(t, filepath.Join(cfolder, CertFile))
	if !slices.Equal(cleaf.DNSNames, []string{"coord-2", "localhost"}) || len(cleaf.IPAddresses) != 2 {
		t.Errorf("coordinator SANs %q %v", cleaf.DNSNames, cleaf.IPAddresses)
	}

	// A client certificate cannot be used to serve.
	clientLeaf := readLeaf(t, filepath.Join(dir, string(Client), CertFile))
	if slices.Contains(clientLeaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Error("client certificate allows server authentication")
	}
}

func TestIssueRejectsBadInput(t *testing.T) {
	dir := newPKI(t)
	folder := filepath.Join(t.TempDir(), "x")
	wantErrContains(t, Issue(dir, Role("admin"), nil, folder, IssueOptions{}), `unknown role "admin"`)
	wantErrContains(t, Issue(dir, Worker, []string{"http://w1"}, folder, IssueOptions{}), "http://w1")
	wantErrContains(t, Issue(t.TempDir(), Worker, nil, folder, IssueOptions{}), CACertFile)

	// A CA key that does not belong to ca.crt.
	other := newPKI(t)
	key, err := os.ReadFile(filepath.Join(other, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, CAKeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
	wantErrContains(t, Issue(dir, Worker, nil, folder, IssueOptions{}), filepath.Join(dir, CAKeyFile), "matches no certificate")
	if _, err := os.Stat(folder); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("failed Issue created %s", folder)
	}
}

// TestIssueCapsValidityAtCA checks that a leaf never outlives its CA.
func TestIssueCapsValidityAtCA(t *testing.T) {
	dir := newPKI(t)
	folder := filepath.Join(t.TempDir(), "w")
	if err := Issue(dir, Worker, nil, folder, IssueOptions{Validity: 20 * 365 * 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	ca := readLeaf(t, filepath.Join(dir, CACertFile))
	if leaf := readLeaf(t, filepath.Join(folder, CertFile)); leaf.NotAfter.After(ca.NotAfter) {
		t.Errorf("leaf NotAfter %v after CA NotAfter %v", leaf.NotAfter, ca.NotAfter)
	}
	future := func() time.Time { return time.Now().Add(11 * 365 * 24 * time.Hour) }
	wantErrContains(t, Issue(dir, Worker, nil, folder, IssueOptions{Now: future}), "expires")
}

func TestWriteFileAtomicNoReplace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := writeFileAtomic(path, []byte("one"), 0o600, true); err != nil {
		t.Fatal(err)
	}
	err := writeFileAtomic(path, []byte("two"), 0o600, true)
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("second no-replace write: %v; want fs.ErrExist naming %s", err, path)
	}
	if err := writeFileAtomic(path, []byte("three"), 0o640, false); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "three" {
		t.Errorf("content %q, want three", got)
	}
	if m := mode(t, path); m != 0o640 {
		t.Errorf("mode %v, want 0640", m)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %d entries", len(entries))
	}
}
