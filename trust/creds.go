package trust

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// defaultReloadInterval is how often, at most, a role folder is checked for
// changes.
const defaultReloadInterval = time.Second

// Credentials are one role folder (ca.crt, tls.crt, tls.key), loaded by
// [Load] and re-read from disk when its files change, so a rotated
// certificate or CA is used by new handshakes without a restart.
//
// The files are checked at most once a second, when a handshake needs them,
// by modification time, size and file identity; there is no goroutine. A
// reload that fails keeps the last good material and logs a warning (once
// per change of the files). A reloaded certificate must carry the same role
// as the one loaded first.
//
// Credentials are safe for concurrent use. The TLS configurations they hand
// out stay tied to them and always use the current material.
type Credentials struct {
	folder   string
	log      *slog.Logger
	role     Role
	interval time.Duration // between checks of the files; tests shorten it

	mat       atomic.Pointer[material]
	nextCheck atomic.Int64 // UnixNano before which the files are not checked

	mu   sync.Mutex   // held while checking the files
	seen [3]fileStamp // the files as last read (successfully or not); guarded by mu
}

// material is one consistent, validated reading of a role folder. It is
// never modified after it is built.
type material struct {
	cert   tls.Certificate // chain and key; Leaf set
	served tls.Certificate // cert with the CA that signed it appended (a server's)
	pool   *x509.CertPool  // CAs from ca.crt
	role   Role
}

// Load reads the role folder (folder/ca.crt, folder/tls.crt and
// folder/tls.key). It fails if the folder is unusable: a missing or
// unparsable file, a key not matching the certificate, a certificate not
// signed by a CA in ca.crt, or a certificate carrying no (or no known) role;
// the error names the file. An expired or not yet valid certificate is
// loaded with a warning (handshakes with it fail until it is rotated).
//
// log receives reload events and warnings; nil discards them.
func Load(folder string, log *slog.Logger) (*Credentials, error) {
	return load(folder, log, defaultReloadInterval)
}

func load(folder string, log *slog.Logger, interval time.Duration) (*Credentials, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Credentials{folder: folder, log: log, interval: interval}
	c.seen = statFiles(folder)
	m, warning, err := loadMaterial(folder)
	if err != nil {
		return nil, fmt.Errorf("trust: load credentials from %s: %w", folder, err)
	}
	if warning != "" {
		log.Warn("trust: "+warning, "folder", folder)
	}
	c.role = m.role
	c.mat.Store(m)
	c.nextCheck.Store(time.Now().Add(interval).UnixNano())
	return c, nil
}

// Role returns the role carried by the folder's certificate.
func (c *Credentials) Role() Role { return c.role }

// ServerTLS returns a server configuration: TLS 1.3 only, the folder's
// current certificate (sent with the CA certificate that signed it, so a
// token holder can check it against its pins), and a client certificate
// required, verified against the current CA pool and carrying a role. Any
// role is accepted at the handshake; check roles per call with a [Guard].
// Session tickets are disabled so every connection is verified against the
// current pool.
//
// Each handshake is served by a configuration built by GetConfigForClient
// from the current material; NextProtos set on the returned configuration
// before use are copied into it (gRPC adds "h2" itself).
func (c *Credentials) ServerTLS() *tls.Config { return c.serverTLS(tls.RequireAndVerifyClientCert) }

// ServerTLSAdmittingTokens is [Credentials.ServerTLS] for a server that also
// admits token holders: a client certificate is verified if one is sent, but
// a client may send none. A [Guard] with a [Token] then requires the token
// on every call of such a client.
func (c *Credentials) ServerTLSAdmittingTokens() *tls.Config {
	return c.serverTLS(tls.VerifyClientCertIfGiven)
}

func (c *Credentials) serverTLS(auth tls.ClientAuthType) *tls.Config {
	base := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		ClientAuth:             auth,
		SessionTicketsDisabled: true,
	}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		m := c.current()
		return &tls.Config{
			MinVersion:             tls.VersionTLS13,
			Certificates:           []tls.Certificate{m.served},
			ClientAuth:             auth,
			ClientCAs:              m.pool,
			SessionTicketsDisabled: true,
			NextProtos:             base.NextProtos,
			VerifyConnection:       verifyClient,
		}, nil
	}
	return base
}

// verifyClient runs after the TLS stack verified the client's chain; it
// requires the certificate, if the client sent one, to carry a role. (With
// tls.RequireAndVerifyClientCert the TLS stack has already refused a client
// without one.)
func verifyClient(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return errors.New("trust: client certificate not verified")
	}
	if _, err := roleOf(cs.VerifiedChains[0][0]); err != nil {
		return fmt.Errorf("trust: client certificate refused: %w", err)
	}
	return nil
}

// ClientTLS returns a client configuration: TLS 1.3 only, presenting the
// folder's current certificate, verifying the server's chain against the
// current CA pool and requiring the server's certificate to carry one of
// serverRoles. A worker dialling coordinators passes [Coordinator]; a worker
// dialling a ring peer passes [Worker]. Without serverRoles every handshake
// fails (default deny).
//
// The server's host name is NOT verified (see the package documentation):
// InsecureSkipVerify is set and the chain and role are checked in
// VerifyConnection instead.
func (c *Credentials) ClientTLS(serverRoles ...Role) *tls.Config {
	allowed := knownRoles(serverRoles)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Chain and role are verified in VerifyConnection; the host name
		// deliberately is not.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &c.current().cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyServer(cs, c.current().pool, allowed)
		},
	}
}

// verifyServer verifies the server's chain against pool and requires its
// certificate to carry one of allowed.
func verifyServer(cs tls.ConnectionState, pool *x509.CertPool, allowed []Role) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("trust: server presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, ic := range cs.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	return verifyLeaf(cs.PeerCertificates[0], pool, inter, allowed)
}

// verifyLeaf verifies a server's certificate against roots and requires it
// to carry one of allowed.
func verifyLeaf(leaf *x509.Certificate, roots, inter *x509.CertPool, allowed []Role) error {
	if len(allowed) == 0 {
		return errors.New("trust: no server roles configured for this connection; refusing every server")
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if _, err := leaf.Verify(opts); err != nil {
		return fmt.Errorf("trust: server certificate %q (serial %s) not trusted: %w", leaf.Subject.CommonName, serialString(leaf), err)
	}
	role, err := roleOf(leaf)
	if err != nil {
		return fmt.Errorf("trust: server certificate refused: %w", err)
	}
	if !slices.Contains(allowed, role) {
		return fmt.Errorf("trust: server certificate %q (serial %s) has role %s; this connection requires %s",
			leaf.Subject.CommonName, serialString(leaf), role, rolesString(allowed))
	}
	return nil
}

// knownRoles returns the known roles among roles, without repeats.
func knownRoles(roles []Role) []Role {
	var known []Role
	for _, r := range roles {
		if _, err := ParseRole(string(r)); err == nil && !slices.Contains(known, r) {
			known = append(known, r)
		}
	}
	return known
}

// ServerOption returns the gRPC server option installing [Credentials.ServerTLS].
func (c *Credentials) ServerOption() grpc.ServerOption {
	return grpc.Creds(credentials.NewTLS(c.ServerTLS()))
}

// DialOption returns the gRPC dial option installing
// [Credentials.ClientTLS] with serverRoles.
func (c *Credentials) DialOption(serverRoles ...Role) grpc.DialOption {
	return grpc.WithTransportCredentials(credentials.NewTLS(c.ClientTLS(serverRoles...)))
}

// current returns the current material, first re-reading the folder if the
// check interval has passed and its files changed. Only one caller checks at
// a time; the others use the material they find.
func (c *Credentials) current() *material {
	if time.Now().UnixNano() < c.nextCheck.Load() || !c.mu.TryLock() {
		return c.mat.Load()
	}
	defer c.mu.Unlock()
	now := time.Now()
	if now.UnixNano() < c.nextCheck.Load() {
		return c.mat.Load()
	}
	c.nextCheck.Store(now.Add(c.interval).UnixNano())
	c.reloadIfChanged()
	return c.mat.Load()
}

// reloadIfChanged re-reads the folder if its files differ from the last
// reading. The caller holds c.mu.
func (c *Credentials) reloadIfChanged() {
	stamps := statFiles(c.folder)
	if stamps == c.seen {
		return
	}
	c.seen = stamps
	m, warning, err := loadMaterial(c.folder)
	if err != nil {
		c.log.Warn("trust: reloading credentials failed; keeping the last good ones", "folder", c.folder, "err", err)
		return
	}
	if m.role != c.role {
		c.log.Warn("trust: reloading credentials failed; keeping the last good ones", "folder", c.folder,
			"err", fmt.Sprintf("%s now carries role %s, was %s", filepath.Join(c.folder, CertFile), m.role, c.role))
		return
	}
	c.mat.Store(m)
	c.log.Info("trust: reloaded credentials", "folder", c.folder, "role", m.role,
		"name", m.cert.Leaf.Subject.CommonName, "serial", serialString(m.cert.Leaf), "not_after", m.cert.Leaf.NotAfter)
	if warning != "" {
		c.log.Warn("trust: "+warning, "folder", c.folder)
	}
}

// fileStamp identifies one version of a file. It is comparable.
type fileStamp struct {
	err  string // stat error, if any
	mod  int64  // UnixNano
	size int64
	dev  uint64 // with ino: file identity, where the platform has it
	ino  uint64
}

// statFiles stamps a role folder's three files (following symlinks, as
// Kubernetes secret volumes use them).
func statFiles(folder string) [3]fileStamp {
	var s [3]fileStamp
	for i, name := range []string{CACertFile, CertFile, KeyFile} {
		fi, err := os.Stat(filepath.Join(folder, name))
		if err != nil {
			s[i].err = err.Error()
			continue
		}
		s[i].mod = fi.ModTime().UnixNano()
		s[i].size = fi.Size()
		s[i].dev, s[i].ino = fileID(fi)
	}
	return s
}

// loadMaterial reads and validates a role folder. warning is non-empty if
// the material is usable but its certificate is outside its validity
// period.
func loadMaterial(folder string) (m *material, warning string, err error) {
	caPath := filepath.Join(folder, CACertFile)
	certPath := filepath.Join(folder, CertFile)
	keyPath := filepath.Join(folder, KeyFile)

	cas, err := readCerts(caPath)
	if err != nil {
		return nil, "", err
	}
	chain, err := readCerts(certPath)
	if err != nil {
		return nil, "", err
	}
	keyData, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, "", fmt.Errorf("read key: %w", err)
	}
	key, err := parseKey(keyData)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", keyPath, err)
	}
	leaf := chain[0]
	if !publicKeysEqual(key.Public(), leaf.PublicKey) {
		return nil, "", fmt.Errorf("%s does not match the certificate in %s", keyPath, certPath)
	}
	role, err := roleOf(leaf)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", certPath, err)
	}

	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca)
	}
	opts := x509.VerifyOptions{
		Roots:         pool,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	for _, ic := range chain[1:] {
		opts.Intermediates.AddCert(ic)
	}
	if _, verr := leaf.Verify(opts); verr != nil {
		var inv x509.CertificateInvalidError
		if !errors.As(verr, &inv) || inv.Reason != x509.Expired || !signedByAny(leaf, cas) {
			return nil, "", fmt.Errorf("%s is not signed by a CA in %s: %w", certPath, caPath, verr)
		}
		// Signed by our CA but outside its validity period: usable
		// material that a rotation will replace.
		warning = fmt.Sprintf("certificate %s is not valid now (%v); handshakes using it will fail until it is rotated", certPath, verr)
	}

	raw := make([][]byte, len(chain))
	for i, c := range chain {
		raw[i] = c.Raw
	}
	served := raw
	if issuer := issuerOf(chain[len(chain)-1], cas); issuer != nil && !slices.ContainsFunc(chain, issuer.Equal) {
		served = append(slices.Clip(raw), issuer.Raw)
	}
	return &material{
		cert:   tls.Certificate{Certificate: raw, PrivateKey: key, Leaf: leaf},
		served: tls.Certificate{Certificate: served, PrivateKey: key, Leaf: leaf},
		pool:   pool,
		role:   role,
	}, warning, nil
}

// issuerOf returns the certificate among cas that signed cert, or nil.
func issuerOf(cert *x509.Certificate, cas []*x509.Certificate) *x509.Certificate {
	for _, ca := range cas {
		if cert.CheckSignatureFrom(ca) == nil {
			return ca
		}
	}
	return nil
}

// signedByAny reports whether cert's signature verifies with one of cas.
func signedByAny(cert *x509.Certificate, cas []*x509.Certificate) bool {
	for _, ca := range cas {
		if cert.CheckSignatureFrom(ca) == nil {
			return true
		}
	}
	return false
}

// serialString formats a certificate's serial number as lowercase hex.
func serialString(cert *x509.Certificate) string {
	if cert.SerialNumber == nil {
		return ""
	}
	return cert.SerialNumber.Text(16)
}
