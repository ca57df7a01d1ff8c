package trust

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// SelfSignedServerTLS is the server configuration of a worker that holds
// no certificate, only the join token: TLS 1.3 with a self-signed
// certificate made now (valid a year; never written to disk), and no
// client certificate asked for. No peer can verify that certificate, and
// no token is ever sent to such a server; what it serves must
// authenticate both ends itself. The ring does: the hello is signed with
// the sender's ring key over the connection's exported keying material
// (RFC 5705, so a relay in the middle, holding two different connections,
// cannot pass it on) and the receiver answers with its accept key over the
// same material before any gradient is sent (see package allreduce).
func SelfSignedServerTLS(name string) (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("trust: self-signed certificate: generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("trust: self-signed certificate: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"gencluster (self-signed)"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("trust: self-signed certificate: %w", err)
	}
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		ClientAuth:             tls.NoClientCert,
		SessionTicketsDisabled: true,
	}, nil
}

// UnverifiedClientTLS is the client configuration for dialling a
// [SelfSignedServerTLS] server: TLS 1.3, the server's certificate not
// verified, nothing presented. Use it only for a protocol that
// authenticates both ends over the connection's keying material (the
// ring), and never together with a token or a certificate.
func UnverifiedClientTLS() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
}

// ProbeDialOption returns the dial option of a reachability probe: TLS
// 1.3 presenting c's certificate (a worker's server that holds a
// certificate asks for one), the server's certificate not verified (a
// worker holding only the token serves a self-signed one). Send nothing
// secret over it: it checks that a server answers, not who it is.
func (c *Credentials) ProbeDialOption() grpc.DialOption {
	return grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &c.current().cert, nil
		},
	}))
}
