package trust

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

const goodSecret = "0123456789abcdef0123456789abcdef" // 32 bytes

// a pin that names no CA of any test
var otherPin = strings.Repeat("ab", 32)

func writeToken(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustToken(t *testing.T, content string) *Token {
	t.Helper()
	tok, err := LoadToken(writeToken(t, content), nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// line is a token line pinned to pin with secret.
func line(pin, secret string) string { return tokenPrefix + ":" + pin + ":" + secret }

// pkiToken is the token certs init wrote for the PKI in dir.
func pkiToken(t *testing.T, dir string) *Token {
	t.Helper()
	tok, err := LoadToken(filepath.Join(dir, TokenFile), nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestLoadToken(t *testing.T) {
	tok := mustToken(t, "# the cluster's token\n\n  "+line(otherPin, goodSecret)+"\n"+line(otherPin+","+otherPin, strings.Repeat("y", 40))+"\n")
	set := tok.current()
	if set.send.secret != goodSecret || len(set.send.pins) != 1 || len(set.accept) != 2 {
		t.Errorf("parsed %d accepted tokens, first with %d pins (secret ok: %v); want 2, 1, true", len(set.accept), len(set.send.pins), set.send.secret == goodSecret)
	}

	for _, c := range []struct{ name, content, want string }{
		{"short secret", line(otherPin, goodSecret[:31]), "31 bytes"},
		{"space in secret", line(otherPin, goodSecret[:16]+" "+goodSecret), "line 1"},
		{"control byte", line(otherPin, goodSecret+"\x01"), "not printable"},
		{"bare secret", goodSecret, "not a gencluster token"},
		{"no secret", tokenPrefix + ":" + otherPin, "no secret"},
		{"bad pin", line("abcd", goodSecret), "not a hex SHA-256"},
		{"only comments", "# nothing\n\n", "holds no token"},
		{"second line bad", line(otherPin, goodSecret) + "\nnonsense\n", "line 2"},
	} {
		path := writeToken(t, c.content)
		_, err := LoadToken(path, nil)
		wantErrContains(t, err, path, c.want)
		if err != nil && strings.Contains(err.Error(), goodSecret[:16]) {
			t.Errorf("%s: the error quotes the secret: %v", c.name, err)
		}
	}
	missing := filepath.Join(t.TempDir(), "nope")
	_, err := LoadToken(missing, nil)
	wantErrContains(t, err, missing)

	for _, s := range []string{fmt.Sprint(tok), fmt.Sprintf("%+v", tok), fmt.Sprintf("%#v", tok), fmt.Sprintf("%v", struct{ T *Token }{tok})} {
		if strings.Contains(s, goodSecret) {
			t.Errorf("formatting reveals the token: %q", s)
		}
	}
}

func TestNewToken(t *testing.T) {
	dir := newPKI(t)
	path := filepath.Join(dir, TokenFile)
	if m := mode(t, path); m != keyMode {
		t.Errorf("token mode %v, want %v", m, keyMode)
	}
	first := pkiToken(t, dir).current()
	cas, err := readCerts(filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(first.send.pins) != 1 || first.send.pins[0] != sha256Of(cas[0].Raw) {
		t.Errorf("init's token pins %x, want the CA's %x", first.send.pins, sha256Of(cas[0].Raw))
	}
	if _, err := NewToken(dir); err != nil {
		t.Fatal(err)
	}
	if again := pkiToken(t, dir).current(); again.send.secret == first.send.secret {
		t.Error("NewToken kept the secret")
	}
}

func TestTokenCheck(t *testing.T) {
	other := strings.Repeat("y", 40)
	tok := mustToken(t, line(otherPin, goodSecret)+"\n"+line(otherPin, other)+"\n")
	ctx := func(kv ...string) context.Context {
		return metadata.NewIncomingContext(context.Background(), metadata.Pairs(kv...))
	}
	cases := []struct {
		name string
		ctx  context.Context
		ok   bool
	}{
		{"no metadata", context.Background(), false},
		{"no authorization", ctx("x", "y"), false},
		{"wrong token", ctx("authorization", "Bearer "+strings.Repeat("x", 32)), false},
		{"prefix of the token", ctx("authorization", "Bearer "+goodSecret[:31]), false},
		{"token plus suffix", ctx("authorization", "Bearer "+goodSecret+"x"), false},
		{"whole token line", ctx("authorization", "Bearer "+line(otherPin, goodSecret)), false},
		{"wrong scheme", ctx("authorization", "Basic "+goodSecret), false},
		{"bare token", ctx("authorization", goodSecret), false},
		{"empty", ctx("authorization", "Bearer "), false},
		{"two headers", ctx("authorization", "Bearer "+goodSecret, "authorization", "Bearer "+goodSecret), false},
		{"right token", ctx("authorization", "Bearer "+goodSecret), true},
		{"second line's token", ctx("authorization", "Bearer "+other), true},
		{"lower-case scheme", ctx("authorization", "bearer "+goodSecret), true},
	}
	for _, c := range cases {
		err := tok.Check(c.ctx)
		if c.ok && err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
		if !c.ok {
			if err == nil {
				t.Errorf("%s: accepted", c.name)
			} else {
				wantStatusCode(t, c.name, err, codes.Unauthenticated)
			}
		}
	}
}

func wantStatusCode(t *testing.T, name string, err error, code codes.Code) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Errorf("%s: status %v (%v), want %v", name, got, err, code)
	}
}

// TestTokenGRPC: a coordinator admitting token holders lets in a caller
// with the token and no certificate as a worker and a client, never as a
// coordinator; refuses a wrong or missing token with Unauthenticated,
// logging the caller's address; still takes certificates; and a token
// holder refuses a server not signed by the CA its token pins.
func TestTokenGRPC(t *testing.T) {
	dir := newPKI(t)
	tok := pkiToken(t, dir)
	log, logs := testLogger()
	srv := mustLoad(t, filepath.Join(dir, "coordinator"), nil)
	policy := Policy{methodCheck: {Worker}, methodList: {Coordinator}, methodWatch: {Client}}
	addr := startGRPC(t, ServerOptions(srv, tok, policy, log)...)

	hc := dialHealth(t, addr, tok.DialOption(Coordinator)...)
	if err := callCheck(hc); err != nil {
		t.Errorf("a worker's call with the token: %v", err)
	}
	if _, err := hc.List(context.Background(), &healthpb.HealthListRequest{}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "token holder") {
		t.Errorf("a coordinator's call with the token: %v, want PermissionDenied for a token holder", err)
	}

	wrong := mustToken(t, line(hexPin(t, dir), strings.Repeat("z", 40)))
	err := callCheck(dialHealth(t, addr, wrong.DialOption(Coordinator)...))
	wantStatusCode(t, "wrong token", err, codes.Unauthenticated)
	if !strings.Contains(fmt.Sprint(err), "not this cluster's") {
		t.Errorf("wrong token: %v", err)
	}
	if !strings.Contains(logs.String(), "127.0.0.1:") || !strings.Contains(logs.String(), "call refused") {
		t.Errorf("the refusal is not logged with the caller's address:\n%s", logs)
	}

	// TLS without certificate or token.
	bare := dialHealth(t, addr, grpc.WithTransportCredentials(credentials.NewTLS(UnverifiedClientTLS())))
	wantStatusCode(t, "no token", callCheck(bare), codes.Unauthenticated)

	// A certificate is still taken, and its role counts.
	worker := mustLoad(t, filepath.Join(dir, "worker"), nil)
	if err := callCheck(dialHealth(t, addr, worker.DialOption(Coordinator))); err != nil {
		t.Errorf("a worker certificate: %v", err)
	}
	client := mustLoad(t, filepath.Join(dir, "client"), nil)
	wantStatusCode(t, "client certificate on a worker method", callCheck(dialHealth(t, addr, client.DialOption(Coordinator))), codes.PermissionDenied)

	// A token pinned to another CA does not trust this server (and so
	// never sends it its secret).
	foreign := mustToken(t, line(otherPin, goodSecret))
	err = callCheck(dialHealth(t, addr, foreign.DialOption(Coordinator)...))
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not signed by a CA the token names") {
		t.Errorf("token pinned to another CA: %v, want Unavailable naming the pins", err)
	}
	// Nor a server of the right CA without the wanted role.
	err = callCheck(dialHealth(t, addr, tok.DialOption(Worker)...))
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "has role coordinator") {
		t.Errorf("server of the wrong role: %v", err)
	}

	// A server that does not admit tokens refuses the handshake without
	// a certificate.
	strict := startGRPC(t, ServerOptions(srv, nil, policy, log)...)
	if err := callCheck(dialHealth(t, strict, tok.DialOption(Coordinator)...)); status.Code(err) != codes.Unavailable {
		t.Errorf("token holder at a certificates-only server: %v, want Unavailable", err)
	}
}

func hexPin(t *testing.T, dir string) string {
	t.Helper()
	return fmt.Sprintf("%x", pkiToken(t, dir).current().send.pins[0])
}

// TestTokenReload: the server re-reads its token file; a new line is
// accepted at once, a removed one refused, and a broken file keeps the
// last good tokens.
func TestTokenReload(t *testing.T) {
	dir := newPKI(t)
	pin := hexPin(t, dir)
	path := writeToken(t, line(pin, goodSecret))
	log, logs := testLogger()
	tok, err := loadToken(path, log, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	newer := strings.Repeat("n", 40)
	ctx := func(secret string) context.Context {
		return metadata.NewIncomingContext(peer.NewContext(context.Background(), &peer.Peer{}), metadata.Pairs("authorization", "Bearer "+secret))
	}
	write := func(content string) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(line(pin, goodSecret) + "\n" + line(pin, newer) + "\n")
	eventually(t, 2*time.Second, func() error { return tok.Check(ctx(newer)) })
	write(line(pin, newer) + "\n")
	eventually(t, 2*time.Second, func() error {
		if tok.Check(ctx(goodSecret)) == nil {
			return fmt.Errorf("the removed token is still accepted")
		}
		return nil
	})
	write("garbage\n")
	// Checks read the file (at most every 10 ms) until the broken
	// replacement is seen and refused; the last good token still works.
	eventually(t, 2*time.Second, func() error {
		if err := tok.Check(ctx(newer)); err != nil {
			t.Fatalf("a broken token file dropped the last good token: %v", err)
		}
		if !strings.Contains(logs.String(), "reloading the token file failed") {
			return fmt.Errorf("the broken token file was not read")
		}
		return nil
	})
	if err := tok.Check(ctx(newer)); err != nil {
		t.Fatalf("after the broken file was refused: %v", err)
	}
}

// TestTokenRequiresTransportSecurity checks that the token is never sent
// without TLS.
func TestTokenRequiresTransportSecurity(t *testing.T) {
	creds := mustToken(t, line(otherPin, goodSecret)).PerRPC()
	if !creds.RequireTransportSecurity() {
		t.Fatal("RequireTransportSecurity() = false")
	}
	_, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(creds))
	if err == nil {
		t.Error("grpc.NewClient accepted the token over an insecure connection")
	}

	// Even if asked directly on an insecure connection, or with no
	// connection information, it refuses.
	ctx := credentials.NewContextWithRequestInfo(context.Background(), credentials.RequestInfo{
		AuthInfo: insecureAuthInfo{},
	})
	if _, err := creds.GetRequestMetadata(ctx); err == nil {
		t.Error("GetRequestMetadata sent the token over an insecure connection")
	}
	if _, err := creds.GetRequestMetadata(context.Background()); err == nil {
		t.Error("GetRequestMetadata sent the token without knowing the connection")
	}
	secure := credentials.NewContextWithRequestInfo(context.Background(), credentials.RequestInfo{
		AuthInfo: credentials.TLSInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}},
	})
	md, err := creds.GetRequestMetadata(secure)
	if err != nil || md["authorization"] != "Bearer "+goodSecret {
		t.Errorf("GetRequestMetadata over TLS = %v, %v", md, err)
	}
}

type insecureAuthInfo struct{}

func (insecureAuthInfo) AuthType() string { return "insecure" }
func (insecureAuthInfo) GetCommonAuthInfo() credentials.CommonAuthInfo {
	return credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}
}

func sha256Of(b []byte) [sha256.Size]byte { return sha256.Sum256(b) }
