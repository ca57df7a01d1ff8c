package trust

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// TokenFile is the name [Init] and [NewToken] give a PKI directory's join
// token: DIR/token.
const TokenFile = "token"

// tokenPrefix starts every token; the format is
//
//	gencluster-token-v1:<pin>[,<pin>...]:<secret>
//
// where each pin is the hex SHA-256 of a CA certificate (DER) that may sign
// coordinators' certificates, and the secret is at least MinTokenLen
// printable ASCII bytes.
const tokenPrefix = "gencluster-token-v1"

// MinTokenLen is the minimum length of a token's secret, in bytes.
const MinTokenLen = 32

// secretBytes is the number of random bytes in a secret made by NewToken
// (hex-encoded: twice as many characters).
const secretBytes = 32

// token is one parsed token line.
type token struct {
	secret string
	pins   [][sha256.Size]byte // CA certificates a coordinator's chain may end in
}

// tokenSet is one reading of a token file: the first line is sent, every
// line is accepted.
type tokenSet struct {
	send   token
	accept [][sha256.Size]byte // SHA-256 of each accepted secret
}

// Token is a join token file ([LoadToken]): a shared secret that lets
// workers and clients in without client certificates, and the pins of the
// CA certificates that sign the coordinators' certificates, so that a
// holder of the token alone can verify the coordinators it dials.
//
// The file holds one token per line (blank lines and lines starting with #
// are skipped). The first is the one this process sends; a server accepts
// any of them, which is how a token is rotated: add the new line to the
// coordinators' file, hand the new token to workers and clients, then
// remove the old line. The file is re-read when it changes (checked at most
// once a second, when a call needs it); a replacement that does not parse
// is logged and the last good reading kept.
//
// Holding the token makes a caller a worker and a client (never a
// coordinator). Its String and GoString methods do not reveal it. A Token is
// safe for concurrent use.
type Token struct {
	file     string
	log      *slog.Logger
	interval time.Duration

	cur       atomic.Pointer[tokenSet]
	nextCheck atomic.Int64
	mu        sync.Mutex
	seen      fileStamp // guarded by mu
}

// LoadToken reads a token file. It fails, naming the file and the line, if
// a line does not parse or the file holds no token.
func LoadToken(file string, log *slog.Logger) (*Token, error) {
	return loadToken(file, log, defaultReloadInterval)
}

func loadToken(file string, log *slog.Logger, interval time.Duration) (*Token, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Token{file: file, log: log, interval: interval}
	t.seen = statFile(file)
	set, err := readTokenFile(file)
	if err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	t.cur.Store(set)
	t.nextCheck.Store(time.Now().Add(interval).UnixNano())
	return t, nil
}

// String returns a placeholder; the token is never formatted.
func (t *Token) String() string { return "trust.Token(redacted)" }

// GoString returns a placeholder; the token is never formatted.
func (t *Token) GoString() string { return t.String() }

// current returns the current reading, first re-reading the file if the
// check interval has passed and it changed.
func (t *Token) current() *tokenSet {
	if time.Now().UnixNano() < t.nextCheck.Load() || !t.mu.TryLock() {
		return t.cur.Load()
	}
	defer t.mu.Unlock()
	t.nextCheck.Store(time.Now().Add(t.interval).UnixNano())
	st := statFile(t.file)
	if st == t.seen {
		return t.cur.Load()
	}
	t.seen = st
	set, err := readTokenFile(t.file)
	if err != nil {
		t.log.Warn("trust: reloading the token file failed; keeping the last good tokens", "file", t.file, "err", err)
		return t.cur.Load()
	}
	t.cur.Store(set)
	t.log.Info("trust: reloaded the token file", "file", t.file, "tokens", len(set.accept))
	return set
}

// statFile stamps one file, as statFiles does a role folder's.
func statFile(path string) fileStamp {
	var s fileStamp
	fi, err := os.Stat(path)
	if err != nil {
		s.err = err.Error()
		return s
	}
	s.mod, s.size = fi.ModTime().UnixNano(), fi.Size()
	s.dev, s.ino = fileID(fi)
	return s
}

func readTokenFile(file string) (*tokenSet, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read token: %w", err)
	}
	set := new(tokenSet)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		tok, err := parseToken(line)
		if err != nil {
			return nil, fmt.Errorf("token file %s, line %d: %w", file, n, err)
		}
		if len(set.accept) == 0 {
			set.send = tok
		}
		set.accept = append(set.accept, sha256.Sum256([]byte(tok.secret)))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read token file %s: %w", file, err)
	}
	if len(set.accept) == 0 {
		return nil, fmt.Errorf("token file %s holds no token (make one with: gencluster certs token --dir DIR)", file)
	}
	return set, nil
}

// parseToken parses one token line. Errors never quote the secret.
func parseToken(line string) (token, error) {
	prefix, rest, ok := strings.Cut(line, ":")
	if !ok || prefix != tokenPrefix {
		return token{}, fmt.Errorf("not a gencluster token (want %s:<CA pins>:<secret>, as written by gencluster certs init or certs token)", tokenPrefix)
	}
	pins, secret, ok := strings.Cut(rest, ":")
	if !ok {
		return token{}, errors.New("token has no secret after its CA pins")
	}
	var tok token
	for _, p := range strings.Split(pins, ",") {
		b, err := hex.DecodeString(p)
		if err != nil || len(b) != sha256.Size {
			return token{}, fmt.Errorf("CA pin %q is not a hex SHA-256", p)
		}
		tok.pins = append(tok.pins, [sha256.Size]byte(b))
	}
	if len(secret) < MinTokenLen {
		return token{}, fmt.Errorf("token secret is %d bytes; at least %d are required", len(secret), MinTokenLen)
	}
	for i := 0; i < len(secret); i++ {
		if b := secret[i]; b < 0x21 || b > 0x7e {
			return token{}, fmt.Errorf("token secret: byte %d is not printable ASCII (spaces and control characters are not allowed)", i)
		}
	}
	tok.secret = secret
	return tok, nil
}

// NewToken writes a new token to dir/token (mode 0600, replacing any):
// a fresh random secret, pinned to every CA certificate in dir/ca.crt. It
// returns the file's path. Run it again after a CA rotation adds a CA to
// the bundle, so the token verifies coordinators signed by either.
func NewToken(dir string) (string, error) {
	cas, err := readCerts(filepath.Join(dir, CACertFile))
	if err != nil {
		return "", fmt.Errorf("trust: new token: %w", err)
	}
	line, err := tokenLine(cas)
	if err != nil {
		return "", fmt.Errorf("trust: new token: %w", err)
	}
	path := filepath.Join(dir, TokenFile)
	if err := writeFileAtomic(path, []byte(line+"\n"), keyMode, false); err != nil {
		return "", fmt.Errorf("trust: new token: %w", err)
	}
	return path, nil
}

// tokenLine makes a token pinned to cas with a fresh random secret.
func tokenLine(cas []*x509.Certificate) (string, error) {
	pins := make([]string, len(cas))
	for i, c := range cas {
		sum := sha256.Sum256(c.Raw)
		pins[i] = hex.EncodeToString(sum[:])
	}
	b := make([]byte, secretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random secret: %w", err)
	}
	return tokenPrefix + ":" + strings.Join(pins, ",") + ":" + hex.EncodeToString(b), nil
}

// Check verifies the bearer token in the incoming metadata of a gRPC
// server-side context against every token of the file, in constant time.
// It returns an error with status codes.Unauthenticated, naming the peer's
// address, if the token is missing or wrong.
func (t *Token) Check(ctx context.Context) error {
	p, _ := peer.FromContext(ctx)
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return status.Errorf(codes.Unauthenticated, "trust: %s sent neither a client certificate nor a token", peerAddr(p))
	}
	if len(vals) > 1 {
		return status.Errorf(codes.Unauthenticated, "trust: %s sent more than one authorization header", peerAddr(p))
	}
	scheme, got, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return status.Errorf(codes.Unauthenticated, "trust: %s: authorization is not a bearer token", peerAddr(p))
	}
	// Compare digests so neither the content nor the length leaks; look at
	// every accepted token whatever matches.
	have := sha256.Sum256([]byte(got))
	match := 0
	for _, want := range t.current().accept {
		match |= subtle.ConstantTimeCompare(want[:], have[:])
	}
	if match != 1 {
		return status.Errorf(codes.Unauthenticated, "trust: %s sent a token that is not this cluster's", peerAddr(p))
	}
	return nil
}

// PerRPC returns per-RPC credentials sending the current token as
// "authorization: Bearer <secret>". They require transport security: gRPC
// refuses to use them on a connection without TLS.
func (t *Token) PerRPC() credentials.PerRPCCredentials { return tokenCreds{t} }

type tokenCreds struct{ t *Token }

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (c tokenCreds) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	ri, ok := credentials.RequestInfoFromContext(ctx)
	if !ok {
		return nil, errors.New("trust: refusing to send the token: no connection information")
	}
	if err := credentials.CheckSecurityLevel(ri.AuthInfo, credentials.PrivacyAndIntegrity); err != nil {
		return nil, fmt.Errorf("trust: refusing to send the token over an insecure connection: %w", err)
	}
	return map[string]string{"authorization": "Bearer " + c.t.current().send.secret}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials; it
// returns true.
func (tokenCreds) RequireTransportSecurity() bool { return true }

// ClientTLS returns the configuration for a token holder dialling a
// server: TLS 1.3, no client certificate, and the server's certificate
// verified against the token's CA pins (the server sends its CA with its
// chain; see [Credentials.ServerTLS]) and required to carry one of
// serverRoles. Host names are not verified, as with [Credentials.ClientTLS].
func (t *Token) ClientTLS(serverRoles ...Role) *tls.Config {
	allowed := knownRoles(serverRoles)
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified against the pins in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPinned(cs, t.current().send.pins, allowed)
		},
	}
}

// DialOption returns the gRPC dial options for a token holder: TLS as
// [Token.ClientTLS] says and the token on every call.
func (t *Token) DialOption(serverRoles ...Role) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(t.ClientTLS(serverRoles...))),
		grpc.WithPerRPCCredentials(t.PerRPC()),
	}
}

// verifyPinned verifies a server chain ending in a CA certificate whose
// SHA-256 is one of pins, and the leaf's role.
func verifyPinned(cs tls.ConnectionState, pins [][sha256.Size]byte, allowed []Role) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("trust: server presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	roots := x509.NewCertPool()
	inter := x509.NewCertPool()
	pinned := false
	for _, c := range cs.PeerCertificates[1:] {
		if slices.Contains(pins, sha256.Sum256(c.Raw)) {
			roots.AddCert(c)
			pinned = true
		} else {
			inter.AddCert(c)
		}
	}
	if !pinned {
		return fmt.Errorf("trust: server certificate %q (serial %s) is not signed by a CA the token names (is the token from this cluster's certs init, and was it remade after a CA rotation?)",
			leaf.Subject.CommonName, serialString(leaf))
	}
	return verifyLeaf(leaf, roots, inter, allowed)
}
