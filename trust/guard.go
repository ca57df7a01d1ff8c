package trust

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Identity is who a verified TLS peer is.
type Identity struct {
	// Role is the role carried by the peer's certificate.
	Role Role
	// Name is the certificate's subject common name (informational).
	Name string
	// Serial is the certificate's serial number, lowercase hex.
	Serial string
	// Token is set for a caller that sent no certificate but the join
	// token (Role is empty then): it may call what a worker or a client
	// may.
	Token bool
}

// may reports whether the identity may call a method open to allowed.
func (id Identity) may(allowed []Role) bool {
	if id.Token {
		return slices.Contains(allowed, Worker) || slices.Contains(allowed, Client)
	}
	return slices.Contains(allowed, id.Role)
}

// who names the identity in messages.
func (id Identity) who() string {
	if id.Token {
		return "a token holder"
	}
	return fmt.Sprintf("role %s (%q)", id.Role, id.Name)
}

// PeerIdentity returns the identity of the peer of a gRPC server-side
// context, from its client certificate as verified by the TLS handshake
// (see [Credentials.ServerTLS]). It returns an error with status
// codes.Unauthenticated if the peer did not present a verified certificate
// carrying a role.
func PeerIdentity(ctx context.Context) (Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, status.Error(codes.Unauthenticated, "trust: no peer information in the call context")
	}
	var state *credentials.TLSInfo
	switch ai := p.AuthInfo.(type) {
	case credentials.TLSInfo:
		state = &ai
	case *credentials.TLSInfo:
		state = ai
	}
	if state == nil {
		return Identity{}, status.Errorf(codes.Unauthenticated, "trust: peer %s did not connect over TLS", peerAddr(p))
	}
	chains := state.State.VerifiedChains
	if len(chains) == 0 || len(chains[0]) == 0 {
		return Identity{}, status.Errorf(codes.Unauthenticated, "trust: peer %s presented no verified client certificate", peerAddr(p))
	}
	leaf := chains[0][0]
	role, err := roleOf(leaf)
	if err != nil {
		return Identity{}, status.Errorf(codes.Unauthenticated, "trust: peer %s: %v", peerAddr(p), err)
	}
	return Identity{Role: role, Name: leaf.Subject.CommonName, Serial: serialString(leaf)}, nil
}

func peerAddr(p *peer.Peer) string {
	if p == nil || p.Addr == nil {
		return "unknown"
	}
	return p.Addr.String()
}

// Policy maps a full gRPC method name ("/pkg.Service/Method") to the roles
// allowed to call it. A method missing from the policy may not be called by
// anyone (default deny); so may a method mapped to no roles.
type Policy map[string][]Role

// Guard enforces a [Policy] on a gRPC server through interceptors. A refused
// call gets status codes.PermissionDenied with a message naming the method,
// the caller's role and the allowed roles, or codes.Unauthenticated if the
// caller has no verified TLS identity. Every refusal is logged at Warn level
// with the peer's address and counted per method.
//
// A Guard is safe for concurrent use.
type Guard struct {
	policy Policy
	token  *Token // nil: certificates only
	log    *slog.Logger

	mu      sync.Mutex
	refused map[string]uint64
}

// NewGuard returns a guard enforcing policy (copied; later changes to it
// have no effect). Unknown roles in the policy are logged and never match.
// With token non-nil, a caller that presented no certificate is admitted
// if its call carries the token, as a worker and a client ([Identity.Token]);
// refusing it is logged with its address. log nil discards the log.
func NewGuard(policy Policy, token *Token, log *slog.Logger) *Guard {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := make(Policy, len(policy))
	for method, roles := range policy {
		p[method] = slices.Clone(roles)
		for _, r := range roles {
			if _, err := ParseRole(string(r)); err != nil {
				log.Warn("trust: policy names an unknown role; it never matches", "method", method, "err", err)
			}
		}
	}
	return &Guard{policy: p, token: token, log: log, refused: make(map[string]uint64)}
}

// UnaryInterceptor returns the interceptor checking unary calls.
func (g *Guard) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := g.authorize(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor returns the interceptor checking streaming calls.
func (g *Guard) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := g.authorize(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

// Refused returns a snapshot of the number of refused calls per full method
// name.
func (g *Guard) Refused() map[string]uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return maps.Clone(g.refused)
}

// authorize returns nil if the caller of method may call it, else the status
// error to return (after logging and counting the refusal).
func (g *Guard) authorize(ctx context.Context, method string) error {
	id, err := PeerIdentity(ctx)
	if err != nil && g.token != nil && !sentCertificate(ctx) {
		if err = g.token.Check(ctx); err == nil {
			id = Identity{Token: true, Name: "token holder"}
		}
	}
	if err != nil {
		return g.refuse(ctx, method, id, nil, err)
	}
	allowed, ok := g.policy[method]
	if !ok {
		return g.refuse(ctx, method, id, nil, status.Errorf(codes.PermissionDenied,
			"trust: method %s refused for %s: the method is not in the policy (allowed roles: none)", method, id.who()))
	}
	if !id.may(allowed) {
		return g.refuse(ctx, method, id, allowed, status.Errorf(codes.PermissionDenied,
			"trust: method %s refused for %s; allowed roles: %s", method, id.who(), rolesString(allowed)))
	}
	return nil
}

// sentCertificate reports whether the peer of a server-side context
// presented a certificate in its TLS handshake.
func sentCertificate(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	switch ai := p.AuthInfo.(type) {
	case credentials.TLSInfo:
		return len(ai.State.PeerCertificates) > 0
	case *credentials.TLSInfo:
		return ai != nil && len(ai.State.PeerCertificates) > 0
	}
	return false
}

// UnknownMethod is the key under which Refused counts calls of methods
// the policy does not name (a caller picks those names: counting each
// would let it grow the map, and a metric's labels, without bound).
const UnknownMethod = "(not in the policy)"

func (g *Guard) refuse(ctx context.Context, method string, id Identity, allowed []Role, err error) error {
	key := method
	if _, ok := g.policy[method]; !ok {
		key = UnknownMethod
	}
	g.mu.Lock()
	g.refused[key]++
	g.mu.Unlock()
	p, _ := peer.FromContext(ctx)
	g.log.Warn("trust: call refused",
		"method", method,
		"peer", peerAddr(p),
		"role", string(id.Role),
		"name", id.Name,
		"serial", id.Serial,
		"allowed", rolesString(allowed),
		"code", status.Code(err).String(),
		"err", status.Convert(err).Message())
	return err
}

// ServerOptions are the options that make a gRPC server mutual TLS with c
// and check every call's role against policy (refusals logged to log); nil
// if c is nil (plaintext). With token non-nil, callers without a
// certificate are admitted too if they carry the token (see [NewGuard]).
func ServerOptions(c *Credentials, token *Token, policy Policy, log *slog.Logger) []grpc.ServerOption {
	opts, _ := GuardedServerOptions(c, token, policy, log)
	return opts
}

// GuardedServerOptions is ServerOptions that also returns the Guard (nil
// with c nil), whose Refused counts feed the process's metrics.
func GuardedServerOptions(c *Credentials, token *Token, policy Policy, log *slog.Logger) ([]grpc.ServerOption, *Guard) {
	if c == nil {
		return nil, nil
	}
	g := NewGuard(policy, token, log)
	tlsConf := c.ServerTLS()
	if token != nil {
		tlsConf = c.ServerTLSAdmittingTokens()
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(tlsConf)),
		grpc.ChainUnaryInterceptor(g.UnaryInterceptor()), grpc.ChainStreamInterceptor(g.StreamInterceptor())}, g
}
