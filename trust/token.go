package trust

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// MinTokenLen is the minimum length of a token, in bytes.
const MinTokenLen = 32

// Token is a shared secret authenticating callers in small clusters, as an
// alternative to client certificates. It must only be sent over TLS. Its
// String and GoString methods do not reveal it.
type Token struct {
	secret string
}

// LoadToken reads a token from file. Surrounding white space is trimmed;
// the token must be at least [MinTokenLen] bytes of printable ASCII without
// spaces (e.g. the output of "openssl rand -hex 32").
func LoadToken(file string) (Token, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return Token{}, fmt.Errorf("trust: read token: %w", err)
	}
	secret := bytes.TrimSpace(data)
	if len(secret) < MinTokenLen {
		return Token{}, fmt.Errorf("trust: token in %s is %d bytes; at least %d are required", file, len(secret), MinTokenLen)
	}
	for i, b := range secret {
		if b < 0x21 || b > 0x7e {
			return Token{}, fmt.Errorf("trust: token in %s: byte %d is not printable ASCII (spaces and control characters are not allowed)", file, i)
		}
	}
	return Token{secret: string(secret)}, nil
}

// String returns a placeholder; the token is never formatted.
func (t Token) String() string { return "trust.Token(redacted)" }

// GoString returns a placeholder; the token is never formatted.
func (t Token) GoString() string { return t.String() }

// PerRPC returns per-RPC credentials sending the token as
// "authorization: Bearer <token>". They require transport security: gRPC
// refuses to use them on a connection without TLS.
func (t Token) PerRPC() credentials.PerRPCCredentials {
	return tokenCreds{header: "Bearer " + t.secret}
}

type tokenCreds struct{ header string }

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (c tokenCreds) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	if ri, ok := credentials.RequestInfoFromContext(ctx); ok {
		if err := credentials.CheckSecurityLevel(ri.AuthInfo, credentials.PrivacyAndIntegrity); err != nil {
			return nil, fmt.Errorf("trust: refusing to send the token over an insecure connection: %w", err)
		}
	}
	return map[string]string{"authorization": c.header}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials; it
// returns true.
func (tokenCreds) RequireTransportSecurity() bool { return true }

// Check verifies the bearer token in the incoming metadata of a gRPC
// server-side context, comparing in constant time. It returns an error with
// status codes.Unauthenticated if the token is missing or wrong.
func (t Token) Check(ctx context.Context) error {
	if t.secret == "" {
		return status.Error(codes.Unauthenticated, "trust: no token configured on the server")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return status.Error(codes.Unauthenticated, "trust: missing bearer token")
	}
	if len(vals) > 1 {
		return status.Error(codes.Unauthenticated, "trust: more than one authorization header")
	}
	scheme, got, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return status.Error(codes.Unauthenticated, "trust: authorization is not a bearer token")
	}
	// Compare digests so neither the content nor the length leaks.
	want := sha256.Sum256([]byte(t.secret))
	have := sha256.Sum256([]byte(got))
	if subtle.ConstantTimeCompare(want[:], have[:]) != 1 {
		return status.Error(codes.Unauthenticated, "trust: invalid bearer token")
	}
	return nil
}

// UnaryInterceptor returns a server interceptor calling [Token.Check] before
// each unary call.
func (t Token) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := t.Check(ctx); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor returns a server interceptor calling [Token.Check]
// before each streaming call.
func (t Token) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := t.Check(ss.Context()); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}
