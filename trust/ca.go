package trust

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// File names inside a PKI directory and inside a role folder.
const (
	// CACertFile holds the CA certificate(s), PEM.
	CACertFile = "ca.crt"
	// CAKeyFile holds the CA's private key, PEM (PKCS #8). Only in the PKI
	// directory, never in a role folder.
	CAKeyFile = "ca.key"
	// CertFile holds a role folder's certificate chain, PEM.
	CertFile = "tls.crt"
	// KeyFile holds a role folder's private key, PEM (PKCS #8).
	KeyFile = "tls.key"
)

const (
	defaultLeafValidity = 365 * 24 * time.Hour
	defaultCAValidity   = 10 * 365 * 24 * time.Hour
	// backdate is subtracted from NotBefore to tolerate clock skew.
	backdate = 5 * time.Minute

	keyMode  fs.FileMode = 0o600
	certMode fs.FileMode = 0o644
	dirMode  fs.FileMode = 0o700
)

// IssueOptions tune the certificates written by [Init] and [Issue]. The zero
// value is ready to use.
type IssueOptions struct {
	// Validity is how long issued leaf certificates are valid; zero means
	// one year. The CA made by Init is always valid for ten years. A leaf
	// never outlives the CA that signs it: its NotAfter is capped at the
	// CA's.
	Validity time.Duration
	// Now returns the issuing time; nil means time.Now. Tests use it to make
	// expired certificates.
	Now func() time.Time
}

func (o IssueOptions) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o IssueOptions) validity() (time.Duration, error) {
	switch {
	case o.Validity < 0:
		return 0, fmt.Errorf("trust: negative validity %v", o.Validity)
	case o.Validity == 0:
		return defaultLeafValidity, nil
	}
	return o.Validity, nil
}

// Init creates a new CA in dir (dir/ca.crt and dir/ca.key), issues one
// certificate per role into dir/coordinator, dir/worker and dir/client, and
// writes a join token pinned to the new CA to dir/token ([NewToken]).
//
// The coordinator certificate's SANs are coordinatorHosts (DNS names or IP
// addresses) plus "localhost", 127.0.0.1 and ::1; the worker and client
// certificates get "localhost" and 127.0.0.1 (use [Issue] for others). As
// each of these certificates is shared by every holder of its role, its
// common name is the role's name. dir is created if needed. Init refuses to overwrite an existing CA: if dir/ca.crt
// or dir/ca.key exists, it returns an error that names the file and wraps
// [fs.ErrExist], and writes nothing. If issuing a role certificate fails, the
// new CA files are removed again so Init can be retried.
func Init(dir string, coordinatorHosts []string, opts IssueOptions) error {
	if _, err := opts.validity(); err != nil {
		return err
	}
	if _, err := parseHosts(coordinatorHosts); err != nil {
		return fmt.Errorf("trust: init: coordinator hosts: %w", err)
	}
	caCertPath := filepath.Join(dir, CACertFile)
	caKeyPath := filepath.Join(dir, CAKeyFile)
	for _, p := range []string{caCertPath, caKeyPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("trust: init: %s already exists; refusing to overwrite an existing CA: %w", p, fs.ErrExist)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("trust: init: %w", err)
		}
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("trust: init: create %s: %w", dir, err)
	}

	now := opts.now()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("trust: init: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return fmt.Errorf("trust: init: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "gencluster CA", Organization: []string{"gencluster"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(defaultCAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("trust: init: create CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return fmt.Errorf("trust: init: %w", err)
	}

	// Write the key first: if a concurrent Init races us, exactly one of
	// them creates ca.key (writeFileAtomic with noReplace).
	if err := writeFileAtomic(caKeyPath, keyPEM, keyMode, true); err != nil {
		return fmt.Errorf("trust: init: %w", err)
	}
	done := false
	defer func() {
		if !done { // roll back so Init can be retried
			os.Remove(caCertPath)
			os.Remove(caKeyPath)
		}
	}()
	if err := writeFileAtomic(caCertPath, pemCert(der), certMode, true); err != nil {
		return fmt.Errorf("trust: init: %w", err)
	}

	for _, role := range Roles() {
		hosts := []string{"localhost", "127.0.0.1"}
		if role == Coordinator {
			hosts = coordinatorHosts // Issue adds the loopback names.
		}
		// The folders made by Init are shared by every holder of the role,
		// so their common name is the role's name.
		if err := issue(dir, role, hosts, string(role), filepath.Join(dir, string(role)), opts); err != nil {
			return fmt.Errorf("trust: init: %w", err)
		}
	}
	if _, err := NewToken(dir); err != nil {
		return fmt.Errorf("trust: init: %w", err)
	}
	done = true
	return nil
}

// Issue signs a new certificate for role with the CA in dir (dir/ca.crt and
// dir/ca.key) and writes folder/ca.crt, folder/tls.crt and folder/tls.key,
// creating folder (mode 0700) if needed.
//
// hosts (DNS names or IP addresses) become the certificate's SANs; for a
// coordinator, "localhost", 127.0.0.1 and ::1 are always added. The
// certificate's common name is the first of hosts, or the role's name if
// hosts is empty. Existing files in folder are replaced, each atomically:
// this is how a certificate is rotated. folder/ca.crt receives all of
// dir/ca.crt, so a CA bundle written there for a CA rotation propagates.
func Issue(dir string, role Role, hosts []string, folder string, opts IssueOptions) error {
	cn := string(role)
	if len(hosts) > 0 {
		cn = strings.TrimSpace(hosts[0])
	}
	return issue(dir, role, hosts, cn, folder, opts)
}

// issue is Issue with the certificate's common name given.
func issue(dir string, role Role, hosts []string, cn, folder string, opts IssueOptions) error {
	if _, err := ParseRole(string(role)); err != nil {
		return fmt.Errorf("trust: issue: %w", err)
	}
	validity, err := opts.validity()
	if err != nil {
		return fmt.Errorf("trust: issue: %w", err)
	}
	if role == Coordinator {
		hosts = append(append([]string(nil), hosts...), "localhost", "127.0.0.1", "::1")
	}
	sans, err := parseHosts(hosts)
	if err != nil {
		return fmt.Errorf("trust: issue %s certificate: %w", role, err)
	}
	caPEM, caCert, caKey, err := loadCA(dir)
	if err != nil {
		return fmt.Errorf("trust: issue %s certificate: %w", role, err)
	}

	now := opts.now()
	notBefore := now.Add(-backdate)
	notAfter := now.Add(validity)
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	if !notAfter.After(notBefore) {
		return fmt.Errorf("trust: issue %s certificate: CA in %s expires at %v, before the certificate would start",
			role, filepath.Join(dir, CACertFile), caCert.NotAfter)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("trust: issue %s certificate: generate key: %w", role, err)
	}
	serial, err := newSerial()
	if err != nil {
		return fmt.Errorf("trust: issue %s certificate: %w", role, err)
	}
	extUsage := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if role == Client {
		// Clients only ever dial; their certificates cannot serve.
		extUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:         cn,
			Organization:       []string{"gencluster"},
			OrganizationalUnit: []string{string(role)},
		},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           extUsage,
		BasicConstraintsValid: true,
		DNSNames:              sans.dns,
		IPAddresses:           sans.ips,
		URIs:                  []*url.URL{role.uri()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return fmt.Errorf("trust: issue %s certificate: sign: %w", role, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return fmt.Errorf("trust: issue %s certificate: %w", role, err)
	}

	if err := os.MkdirAll(folder, dirMode); err != nil {
		return fmt.Errorf("trust: issue %s certificate: create %s: %w", role, folder, err)
	}
	// Order matters for a reader reloading concurrently (see Credentials):
	// new key + old cert fails validation (mismatch); new key + new cert +
	// old ca.crt fails unless the CA is unchanged, in which case it already
	// is the final material. So a reader never accepts a mixed state; it
	// keeps its old material and retries when the next file lands.
	writes := []struct {
		name string
		data []byte
		mode fs.FileMode
	}{
		{KeyFile, keyPEM, keyMode},
		{CertFile, pemCert(der), certMode},
		{CACertFile, caPEM, certMode},
	}
	for _, w := range writes {
		if err := writeFileAtomic(filepath.Join(folder, w.name), w.data, w.mode, false); err != nil {
			return fmt.Errorf("trust: issue %s certificate: %w", role, err)
		}
	}
	return nil
}

// loadCA reads dir/ca.crt and dir/ca.key. It returns the PEM of all CA
// certificates in ca.crt (re-encoded) and the one matching the key.
func loadCA(dir string) (bundle []byte, cert *x509.Certificate, key crypto.Signer, err error) {
	certPath := filepath.Join(dir, CACertFile)
	keyPath := filepath.Join(dir, CAKeyFile)
	certs, err := readCerts(certPath)
	if err != nil {
		return nil, nil, nil, err
	}
	keyData, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read CA key: %w", err)
	}
	key, err = parseKey(keyData)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("CA key %s: %w", keyPath, err)
	}
	var buf bytes.Buffer
	for _, c := range certs {
		buf.Write(pemCert(c.Raw))
		if cert == nil && publicKeysEqual(key.Public(), c.PublicKey) {
			cert = c
		}
	}
	if cert == nil {
		return nil, nil, nil, fmt.Errorf("CA key %s matches no certificate in %s", keyPath, certPath)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, nil, nil, fmt.Errorf("certificate %q in %s is not a CA certificate", cert.Subject.CommonName, certPath)
	}
	return buf.Bytes(), cert, key, nil
}

// readCerts reads every CERTIFICATE block of a PEM file; it fails if there
// is none or one does not parse.
func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	certs, err := parseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// parseKey parses a PEM private key (PKCS #8, SEC 1 "EC PRIVATE KEY" or
// PKCS #1) that can sign.
func parseKey(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key found")
		}
		var k any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w", err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("private key of type %T cannot sign", k)
		}
		return s, nil
	}
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// newSerial returns a random positive 127-bit serial number.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

type sanSet struct {
	dns []string
	ips []net.IP
}

// parseHosts splits hosts into DNS names and IP addresses, dropping
// duplicates. It rejects empty names and names that look like host:port.
func parseHosts(hosts []string) (sanSet, error) {
	var s sanSet
	seen := make(map[string]bool)
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			return sanSet{}, errors.New("empty host name")
		}
		if ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); ip != nil {
			if !seen[ip.String()] {
				seen[ip.String()] = true
				s.ips = append(s.ips, ip)
			}
			continue
		}
		if strings.ContainsAny(h, ":/ \t@") {
			return sanSet{}, fmt.Errorf("host %q is neither an IP address nor a DNS name (give the host without port or scheme)", h)
		}
		if k := strings.ToLower(h); !seen[k] {
			seen[k] = true
			s.dns = append(s.dns, h)
		}
	}
	return s, nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// folder: write, fsync, chmod, rename (or, with noReplace, hard-link so an
// existing file is never replaced), then fsync the folder.
func writeFileAtomic(path string, data []byte, mode fs.FileMode, noReplace bool) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if f != nil {
			f.Close()
		}
		os.Remove(tmp) // after a rename this is a no-op; after a link it drops the temp name
	}()
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: sync: %w", path, err)
	}
	err = f.Close()
	f = nil
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if noReplace {
		if err := os.Link(tmp, path); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s already exists; refusing to overwrite it: %w", path, fs.ErrExist)
			}
			// Hard links unsupported: check, then rename (racy, but only
			// against a concurrent writer of the same new CA).
			if _, statErr := os.Lstat(path); statErr == nil {
				return fmt.Errorf("%s already exists; refusing to overwrite it: %w", path, fs.ErrExist)
			}
			if err := os.Rename(tmp, path); err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
		}
	} else if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable. File systems that cannot sync a
// directory are tolerated.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, errors.ErrUnsupported) {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}
