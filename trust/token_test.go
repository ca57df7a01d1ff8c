package trust

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const goodSecret = "0123456789abcdef0123456789abcdef" // 32 bytes

func writeToken(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustToken(t *testing.T, secret string) Token {
	t.Helper()
	tok, err := LoadToken(writeToken(t, secret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestLoadToken(t *testing.T) {
	tok, err := LoadToken(writeToken(t, "  "+goodSecret+"\n"))
	if err != nil {
		t.Fatalf("LoadToken: %v", err)
	}
	if tok.secret != goodSecret {
		t.Errorf("token not trimmed: %q", tok.secret)
	}

	short := writeToken(t, goodSecret[:31]+"\n")
	_, err = LoadToken(short)
	wantErrContains(t, err, short, "31 bytes", "at least 32")

	_, err = LoadToken(writeToken(t, goodSecret[:16]+" "+goodSecret))
	wantErrContains(t, err, "not printable")

	missing := filepath.Join(t.TempDir(), "nope")
	_, err = LoadToken(missing)
	wantErrContains(t, err, missing)

	for _, s := range []string{fmt.Sprint(tok), fmt.Sprintf("%+v", tok), fmt.Sprintf("%#v", tok), fmt.Sprintf("%v", struct{ T Token }{tok})} {
		if strings.Contains(s, goodSecret) {
			t.Errorf("formatting reveals the token: %q", s)
		}
	}
}

func TestTokenCheck(t *testing.T) {
	tok := mustToken(t, goodSecret)
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
		{"wrong scheme", ctx("authorization", "Basic "+goodSecret), false},
		{"bare token", ctx("authorization", goodSecret), false},
		{"two headers", ctx("authorization", "Bearer "+goodSecret, "authorization", "Bearer "+goodSecret), false},
		{"right token", ctx("authorization", "Bearer "+goodSecret), true},
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
	if err := (Token{}).Check(ctx("authorization", "Bearer ")); err == nil {
		t.Error("the zero Token accepted an empty bearer token")
	}
}

func wantStatusCode(t *testing.T, name string, err error, code codes.Code) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Errorf("%s: status %v (%v), want %v", name, got, err, code)
	}
}

// TestTokenGRPC runs token authentication over TLS end to end.
func TestTokenGRPC(t *testing.T) {
	dir := newPKI(t)
	tok := mustToken(t, goodSecret)
	srv := mustLoad(t, filepath.Join(dir, "coordinator"), nil)
	addr := startGRPC(t, srv.ServerOption(), grpc.UnaryInterceptor(tok.UnaryInterceptor()), grpc.StreamInterceptor(tok.StreamInterceptor()))
	cli := mustLoad(t, filepath.Join(dir, "client"), nil)

	if err := callCheck(dialHealth(t, addr, cli.DialOption(Coordinator), grpc.WithPerRPCCredentials(tok.PerRPC()))); err != nil {
		t.Errorf("Check with the right token: %v", err)
	}
	wrong := mustToken(t, strings.Repeat("z", 40))
	err := callCheck(dialHealth(t, addr, cli.DialOption(Coordinator), grpc.WithPerRPCCredentials(wrong.PerRPC())))
	wantStatusCode(t, "wrong token", err, codes.Unauthenticated)
	err = callCheck(dialHealth(t, addr, cli.DialOption(Coordinator)))
	wantStatusCode(t, "no token", err, codes.Unauthenticated)
}

// TestTokenRequiresTransportSecurity checks that the token is never sent
// without TLS.
func TestTokenRequiresTransportSecurity(t *testing.T) {
	creds := mustToken(t, goodSecret).PerRPC()
	if !creds.RequireTransportSecurity() {
		t.Fatal("RequireTransportSecurity() = false")
	}
	_, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(creds))
	if err == nil {
		t.Error("grpc.NewClient accepted the token over an insecure connection")
	}

	// Even if asked directly on an insecure connection, it refuses.
	ctx := credentials.NewContextWithRequestInfo(context.Background(), credentials.RequestInfo{
		AuthInfo: insecureAuthInfo{},
	})
	if _, err := creds.GetRequestMetadata(ctx); err == nil {
		t.Error("GetRequestMetadata sent the token over an insecure connection")
	}
	md, err := creds.GetRequestMetadata(context.Background())
	if err != nil || md["authorization"] != "Bearer "+goodSecret {
		t.Errorf("GetRequestMetadata = %v, %v", md, err)
	}
}

type insecureAuthInfo struct{}

func (insecureAuthInfo) AuthType() string { return "insecure" }
func (insecureAuthInfo) GetCommonAuthInfo() credentials.CommonAuthInfo {
	return credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}
}
