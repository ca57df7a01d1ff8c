package trust

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestLoadRejects checks that Load fails on every kind of unusable folder
// and that the error names the offending file.
func TestLoadRejects(t *testing.T) {
	dir := newPKI(t)
	other := newPKI(t)

	tests := []struct {
		name     string
		setup    func(t *testing.T, folder string)
		wantFile string // in folder
		wantText string
	}{
		{
			name:     "missing ca.crt",
			setup:    func(t *testing.T, folder string) { os.Remove(filepath.Join(folder, CACertFile)) },
			wantFile: CACertFile,
			wantText: "no such file",
		},
		{
			name:     "missing tls.crt",
			setup:    func(t *testing.T, folder string) { os.Remove(filepath.Join(folder, CertFile)) },
			wantFile: CertFile,
			wantText: "no such file",
		},
		{
			name:     "missing tls.key",
			setup:    func(t *testing.T, folder string) { os.Remove(filepath.Join(folder, KeyFile)) },
			wantFile: KeyFile,
			wantText: "no such file",
		},
		{
			name: "key not matching the certificate",
			setup: func(t *testing.T, folder string) {
				copyFile(t, filepath.Join(dir, string(Client), KeyFile), filepath.Join(folder, KeyFile))
			},
			wantFile: KeyFile,
			wantText: "does not match",
		},
		{
			name: "certificate signed by another CA",
			setup: func(t *testing.T, folder string) {
				copyFile(t, filepath.Join(other, string(Worker), CertFile), filepath.Join(folder, CertFile))
				copyFile(t, filepath.Join(other, string(Worker), KeyFile), filepath.Join(folder, KeyFile))
			},
			wantFile: CertFile,
			wantText: "not signed by a CA",
		},
		{
			name: "certificate without a role",
			setup: func(t *testing.T, folder string) {
				issueCustom(t, dir, folder, func(c *x509.Certificate) {})
			},
			wantFile: CertFile,
			wantText: "carries no role",
		},
		{
			name: "certificate with an unknown role",
			setup: func(t *testing.T, folder string) {
				issueCustom(t, dir, folder, func(c *x509.Certificate) {
					u := Role("admin").uri()
					c.URIs = append(c.URIs, u)
				})
			},
			wantFile: CertFile,
			wantText: `unknown role "admin"`,
		},
		{
			name: "certificate with two roles",
			setup: func(t *testing.T, folder string) {
				issueCustom(t, dir, folder, func(c *x509.Certificate) {
					c.URIs = append(c.URIs, Worker.uri(), Coordinator.uri())
				})
			},
			wantFile: CertFile,
			wantText: "2 roles",
		},
		{
			name: "garbage certificate",
			setup: func(t *testing.T, folder string) {
				os.WriteFile(filepath.Join(folder, CertFile), []byte("not a certificate\n"), 0o600)
			},
			wantFile: CertFile,
			wantText: "no PEM certificate",
		},
		{
			name: "garbage key",
			setup: func(t *testing.T, folder string) {
				os.WriteFile(filepath.Join(folder, KeyFile), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600)
			},
			wantFile: KeyFile,
			wantText: "parse private key",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			folder := filepath.Join(t.TempDir(), "worker")
			copyFolder(t, filepath.Join(dir, string(Worker)), folder)
			tt.setup(t, folder)
			c, err := Load(folder, nil)
			if c != nil {
				t.Error("Load returned credentials along with an error")
			}
			wantErrContains(t, err, filepath.Join(folder, tt.wantFile), tt.wantText)
		})
	}

	if _, err := Load(filepath.Join(t.TempDir(), "nowhere"), nil); err == nil {
		t.Error("Load of a missing folder succeeded")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// expiredOpts issue certificates that expired a year ago.
var expiredOpts = IssueOptions{Now: func() time.Time { return time.Now().Add(-2 * 365 * 24 * time.Hour) }}

// TestLoadExpiredWarns checks that an expired certificate is loaded (so a
// later rotation can replace it without a restart) with a warning.
func TestLoadExpiredWarns(t *testing.T) {
	dir := newPKI(t)
	folder := filepath.Join(t.TempDir(), "w")
	if err := Issue(dir, Worker, nil, folder, expiredOpts); err != nil {
		t.Fatal(err)
	}
	log, buf := testLogger()
	if _, err := Load(folder, log); err != nil {
		t.Fatalf("Load of an expired certificate: %v", err)
	}
	if !strings.Contains(buf.String(), "level=WARN") || !strings.Contains(buf.String(), "expired") {
		t.Errorf("no expiry warning logged: %q", buf.String())
	}
}

// TestHandshakeOK is the baseline: a worker dialling a coordinator with
// ClientTLS(Coordinator) completes mutual TLS 1.3.
func TestHandshakeOK(t *testing.T) {
	dir := newPKI(t)
	srv := mustLoad(t, filepath.Join(dir, "coordinator"), nil)
	cli := mustLoad(t, filepath.Join(dir, "worker"), nil)
	addr := startTLSServer(t, srv.ServerTLS())

	leaf, err := handshake(addr, cli.ClientTLS(Coordinator))
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if r, _ := roleOf(leaf); r != Coordinator {
		t.Errorf("server role %q", r)
	}
	// Several acceptable roles: one matching is enough.
	if _, err := handshake(addr, cli.ClientTLS(Worker, Coordinator)); err != nil {
		t.Errorf("handshake with roles worker, coordinator: %v", err)
	}
}

// TestHandshakeRefusals checks each way a handshake must fail.
func TestHandshakeRefusals(t *testing.T) {
	dir := newPKI(t)
	other := newPKI(t)
	srv := mustLoad(t, filepath.Join(dir, "coordinator"), nil)
	worker := mustLoad(t, filepath.Join(dir, "worker"), nil)
	addr := startTLSServer(t, srv.ServerTLS())

	t.Run("client without certificate", func(t *testing.T) {
		cfg := worker.ClientTLS(Coordinator)
		cfg.GetClientCertificate = nil
		_, err := handshake(addr, cfg)
		wantErrContains(t, err, "certificate required")
	})

	t.Run("client certificate from another CA", func(t *testing.T) {
		foreign := mustLoad(t, filepath.Join(other, "worker"), nil)
		cfg := foreign.ClientTLS(Coordinator)
		cfg.VerifyConnection = nil // isolate the server's check of the client
		_, err := handshake(addr, cfg)
		wantErrContains(t, err, "unknown certificate authority")
	})

	t.Run("server certificate from another CA", func(t *testing.T) {
		foreign := mustLoad(t, filepath.Join(other, "coordinator"), nil)
		faddr := startTLSServer(t, foreign.ServerTLS())
		_, err := handshake(faddr, worker.ClientTLS(Coordinator))
		wantErrContains(t, err, "not trusted", "unknown authority")
	})

	t.Run("expired client certificate", func(t *testing.T) {
		folder := filepath.Join(t.TempDir(), "w")
		if err := Issue(dir, Worker, nil, folder, expiredOpts); err != nil {
			t.Fatal(err)
		}
		expired := mustLoad(t, folder, nil)
		_, err := handshake(addr, expired.ClientTLS(Coordinator))
		wantErrContains(t, err, "expired certificate")
	})

	t.Run("expired server certificate", func(t *testing.T) {
		folder := filepath.Join(t.TempDir(), "c")
		if err := Issue(dir, Coordinator, nil, folder, expiredOpts); err != nil {
			t.Fatal(err)
		}
		expired := mustLoad(t, folder, nil)
		eaddr := startTLSServer(t, expired.ServerTLS())
		_, err := handshake(eaddr, worker.ClientTLS(Coordinator))
		wantErrContains(t, err, "not trusted", "expired")
	})

	t.Run("server with the wrong role", func(t *testing.T) {
		waddr := startTLSServer(t, worker.ServerTLS())
		_, err := handshake(waddr, worker.ClientTLS(Coordinator))
		wantErrContains(t, err, "has role worker", "requires coordinator")
		if _, err := handshake(waddr, worker.ClientTLS(Worker)); err != nil {
			t.Errorf("ring peer handshake (requiring worker): %v", err)
		}
	})

	t.Run("client certificate cannot serve", func(t *testing.T) {
		client := mustLoad(t, filepath.Join(dir, "client"), nil)
		caddr := startTLSServer(t, client.ServerTLS())
		_, err := handshake(caddr, worker.ClientTLS(Coordinator, Worker, Client))
		wantErrContains(t, err, "not trusted", "usage")
	})

	t.Run("no server roles", func(t *testing.T) {
		_, err := handshake(addr, worker.ClientTLS())
		wantErrContains(t, err, "no server roles")
		_, err = handshake(addr, worker.ClientTLS(Role("admin")))
		wantErrContains(t, err, "no server roles")
	})

	t.Run("client certificate without a role", func(t *testing.T) {
		folder := filepath.Join(t.TempDir(), "norole")
		issueCustom(t, dir, folder, func(*x509.Certificate) {})
		cert, err := tls.LoadX509KeyPair(filepath.Join(folder, CertFile), filepath.Join(folder, KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		cfg := worker.ClientTLS(Coordinator)
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
		_, err = handshake(addr, cfg)
		wantErrContains(t, err, "bad certificate")
	})

	t.Run("TLS 1.2 client", func(t *testing.T) {
		cfg := worker.ClientTLS(Coordinator)
		cfg.MinVersion = tls.VersionTLS12
		cfg.MaxVersion = tls.VersionTLS12
		_, err := handshake(addr, cfg)
		wantErrContains(t, err, "protocol version")
	})

	t.Run("TLS 1.2 server", func(t *testing.T) {
		cfg := srv.ServerTLS()
		get := cfg.GetConfigForClient
		cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := get(h)
			if err == nil {
				c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
			}
			return c, err
		}
		oldAddr := startTLSServer(t, cfg)
		_, err := handshake(oldAddr, worker.ClientTLS(Coordinator))
		wantErrContains(t, err, "protocol version")
	})

	// The refusals did not break the server for a good client.
	if _, err := handshake(addr, worker.ClientTLS(Coordinator)); err != nil {
		t.Errorf("good handshake after refusals: %v", err)
	}
}

// TestGRPCServerRoleMismatch checks over gRPC that a client requiring a
// coordinator refuses a server holding a worker certificate.
func TestGRPCServerRoleMismatch(t *testing.T) {
	dir := newPKI(t)
	worker := mustLoad(t, filepath.Join(dir, "worker"), nil)
	addr := startGRPC(t, worker.ServerOption())

	err := callCheck(dialHealth(t, addr, worker.DialOption(Coordinator)))
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "has role worker") {
		t.Errorf("Check against a worker posing as coordinator: %v; want Unavailable naming the role", err)
	}
	if err := callCheck(dialHealth(t, addr, worker.DialOption(Worker))); err != nil {
		t.Errorf("Check against a ring peer: %v", err)
	}
}

// TestGRPCMutualTLS checks a full gRPC call and that a client without a
// certificate cannot make one.
func TestGRPCMutualTLS(t *testing.T) {
	dir := newPKI(t)
	srv := mustLoad(t, filepath.Join(dir, "coordinator"), nil)
	client := mustLoad(t, filepath.Join(dir, "client"), nil)
	addr := startGRPC(t, srv.ServerOption())

	if err := callCheck(dialHealth(t, addr, client.DialOption(Coordinator))); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if srv.Role() != Coordinator || client.Role() != Client {
		t.Errorf("roles %q %q", srv.Role(), client.Role())
	}
}
