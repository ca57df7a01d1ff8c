package main

import (
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc"

	"github.com/gencluster/gencluster/coordinator"
	"github.com/gencluster/gencluster/trust"
)

// credentials loads the role folder of --tls-dir (nil without it). A
// server must hold the role it serves as (want); a client (want "") may
// use any role's folder.
func (a *app) credentials(want trust.Role) (*trust.Credentials, error) {
	if a.tlsDir == "" {
		return nil, nil
	}
	c, err := trust.Load(a.tlsDir, a.log)
	if err != nil {
		return nil, fmt.Errorf("--tls-dir: %w", err)
	}
	if want != "" && c.Role() != want {
		return nil, fmt.Errorf("--tls-dir %s holds a %s certificate; a %s needs a %s one (gencluster certs issue --role %s)",
			a.tlsDir, c.Role(), want, want, want)
	}
	return c, nil
}

// token loads --token-file (nil without it).
func (a *app) token() (*trust.Token, error) {
	if a.tokenFile == "" {
		return nil, nil
	}
	t, err := trust.LoadToken(a.tokenFile, a.log)
	if err != nil {
		return nil, fmt.Errorf("--token-file: %w", err)
	}
	return t, nil
}

// coordinatorDial is how this command dials coordinators: mutual TLS
// requiring the coordinator role with --tls-dir; else TLS checked against
// the token's CA pins, with the token on every call, with --token-file;
// else plaintext (nil).
func (a *app) coordinatorDial() ([]grpc.DialOption, error) {
	c, err := a.credentials("")
	if err != nil {
		return nil, err
	}
	if c != nil {
		return []grpc.DialOption{c.DialOption(trust.Coordinator)}, nil
	}
	t, err := a.token()
	if err != nil || t == nil {
		return nil, err
	}
	return t.DialOption(trust.Coordinator), nil
}

// newClient is a coordinator client of addrs dialled as coordinatorDial says.
func (a *app) newClient(addrs []string) (*coordinator.Client, error) {
	dial, err := a.coordinatorDial()
	if err != nil {
		return nil, err
	}
	return coordinator.NewClient(addrs, dial...)
}

// tlsHint adds to err what a TLS mismatch looks like from here: a
// plaintext client's call to a TLS server ends in "server preface" errors,
// a TLS client's to a plaintext server in "first record does not look like
// a TLS handshake".
func (a *app) tlsHint(err error) error {
	switch {
	case err == nil:
		return nil
	case a.tlsDir == "" && a.tokenFile == "" && strings.Contains(err.Error(), "server preface"):
		return fmt.Errorf("%w (the coordinators may require TLS: give --tls-dir with a client certificate, or --token-file)", err)
	case a.tlsDir == "" && a.tokenFile != "" && (strings.Contains(err.Error(), "certificate required") ||
		strings.Contains(err.Error(), "broken pipe") || strings.Contains(err.Error(), "connection reset")):
		// A TLS 1.3 server refuses a client without a certificate after
		// the client's side of the handshake is done: the client sees the
		// alert, or only its next write failing.
		return fmt.Errorf("%w (the coordinators may not admit the join token: give them --token-file too, or use --tls-dir here)", err)
	case (a.tlsDir != "" || a.tokenFile != "") && strings.Contains(err.Error(), "does not look like a TLS handshake"):
		return fmt.Errorf("%w (the coordinators serve without TLS: drop --tls-dir and --token-file)", err)
	}
	return err
}

// warnPlaintext says, at start, that a server reachable from other hosts
// runs without TLS: anyone who reaches it may join, submit or report.
func (a *app) warnPlaintext(what, listen string) {
	if a.tlsDir != "" || a.tokenFile != "" {
		return
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return
	}
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
		return
	}
	a.log.Warn("serving without TLS on an address other hosts can reach: anyone who reaches it can act as any worker or client; give --tls-dir or --token-file (see gencluster certs init)",
		"server", what, "listen", listen)
}
