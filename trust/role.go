package trust

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"
)

// Role is what a certificate's holder is allowed to be in the cluster.
type Role string

// The roles known to gencluster.
const (
	// Coordinator is a member of the raft-replicated coordinator group.
	Coordinator Role = "coordinator"
	// Worker is a training worker.
	Worker Role = "worker"
	// Client is an operator tool or other caller of the coordinator API.
	Client Role = "client"
)

// Roles lists every known role, in the order folders are written by [Init].
func Roles() []Role { return []Role{Coordinator, Worker, Client} }

// roleURIPrefix is the prefix of the URI SAN carrying a certificate's role.
const roleURIPrefix = "urn:gencluster:role:"

// ParseRole returns the role named s ("coordinator", "worker" or "client").
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case Coordinator, Worker, Client:
		return r, nil
	}
	return "", fmt.Errorf("trust: unknown role %q (want %s, %s or %s)", s, Coordinator, Worker, Client)
}

// String returns the role's name.
func (r Role) String() string { return string(r) }

// uri returns the URI SAN that carries the role.
func (r Role) uri() *url.URL {
	return &url.URL{Scheme: "urn", Opaque: strings.TrimPrefix(roleURIPrefix, "urn:") + string(r)}
}

// roleOf returns the role carried by cert's URI SANs. It fails if there is
// none, more than one, or an unknown one.
func roleOf(cert *x509.Certificate) (Role, error) {
	var found []string
	for _, u := range cert.URIs {
		if s := u.String(); strings.HasPrefix(s, roleURIPrefix) {
			found = append(found, strings.TrimPrefix(s, roleURIPrefix))
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("certificate %q carries no role (no %s<role> URI SAN)", cert.Subject.CommonName, roleURIPrefix)
	case 1:
		r, err := ParseRole(found[0])
		if err != nil {
			return "", fmt.Errorf("certificate %q: %w", cert.Subject.CommonName, err)
		}
		return r, nil
	default:
		return "", fmt.Errorf("certificate %q carries %d roles %q; exactly one is allowed", cert.Subject.CommonName, len(found), found)
	}
}

// rolesString formats roles for messages, e.g. "coordinator, worker".
func rolesString(roles []Role) string {
	if len(roles) == 0 {
		return "none"
	}
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}
