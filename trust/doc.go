// Package trust provides mutual TLS with roles for gencluster: a private
// certificate authority, the certificates it issues, TLS and gRPC
// configurations built from them, and per-method role checks on gRPC servers.
//
// # Model
//
// There are three roles: [Coordinator], [Worker] and [Client]. A private CA,
// created by [Init], signs one certificate per role (and more later with
// [Issue]). The role is carried in the certificate as a URI subject
// alternative name of the form
//
//	urn:gencluster:role:<role>
//
// and, for humans reading the certificate, also in the subject's
// OrganizationalUnit. Only the URI SAN is authoritative. A certificate
// carrying no role, an unknown role or more than one role is never accepted.
// Keys are ECDSA P-256.
//
// # On-disk layout
//
// A PKI directory has the layout of Kubernetes TLS secrets, so each role
// folder can be mounted as one secret:
//
//	DIR/ca.crt  DIR/ca.key
//	DIR/coordinator/{ca.crt,tls.crt,tls.key}
//	DIR/worker/{ca.crt,tls.crt,tls.key}
//	DIR/client/{ca.crt,tls.crt,tls.key}
//
// Keys are written with mode 0600 and folders created with mode 0700. Every
// file is written to a temporary file in the same folder, synced and renamed
// into place, so a reader sees either the old or the new file, never a
// partial one. [Init] refuses to overwrite an existing CA; [Issue] into an
// existing role folder replaces its files (rotation). DIR/ca.crt may hold
// several CA certificates (a bundle, for CA rotation); [Issue] copies it
// whole into the role folder and signs with the one matching DIR/ca.key.
//
// # Verification: chain and role, not host name
//
// Connections use TLS 1.3 only, and both sides present certificates. A server
// ([Credentials.ServerTLS]) requires a client certificate that chains to the
// CA pool in its folder's ca.crt and carries a role; any role is accepted at
// the handshake, and per-method role checks are done by a [Guard] on the gRPC
// server. A client ([Credentials.ClientTLS]) verifies the server's chain
// against the same pool and requires the server's certificate to carry one
// of the roles it was given, in the spirit of Consul's
// verify_server_hostname: a worker or client certificate can never pose as a
// coordinator.
//
// Host names are NOT verified. A peer's identity is its role (and, for
// logs, its certificate's common name), not the name it was dialled by:
// workers and coordinators dial each other by addresses (pod IPs, ring peer
// addresses, load balancer names) that need not appear in any certificate's
// SANs. The SANs written by [Init] and [Issue] are informational, and useful
// to other tools that do check host names. Anyone holding a certificate of a
// role can therefore serve as any peer of that role; protect the keys
// accordingly.
//
// # Reload
//
// [Credentials] are one role folder loaded by [Load]. They are re-read from
// disk when the folder's files change, so a rotated certificate, key or CA is
// used by new handshakes without a restart. Changes are detected by the
// files' modification time, size and identity (a rename or a Kubernetes
// secret update replaces the file), checked at most once a second and only
// when a handshake needs the material; there is no background goroutine.
// Established connections keep the material they were set up with. A reload
// that fails (a missing or garbled file, a key not matching the certificate,
// a certificate not signed by ca.crt, or a certificate whose role differs
// from the one loaded first) keeps the last good material and logs one
// warning per change of the files. Because [Issue] replaces the three files
// one after the other, a reload may see a mix of old and new files; such a
// mix fails validation (or, for a rotation under the same CA, already is the
// new material), and the next check, after the remaining files are in
// place, picks up the new material. Session resumption is disabled on servers, so every connection
// is verified against the current CA pool.
//
// An expired (or not yet valid) certificate does not make [Load] fail: it
// logs a warning, handshakes with it fail until it is rotated, and the
// rotation is picked up without a restart.
//
// # Token alternative
//
// For small clusters, a shared secret token ([LoadToken]) can authenticate
// callers instead of client certificates: [Token.PerRPC] sends it as
// "authorization: Bearer <token>" and refuses to do so over a connection
// without transport security, and [Token.Check] (or the interceptors built on
// it) compares it in constant time on the server. A token carries no role;
// every holder of the token is equally trusted. It must only be used over
// TLS, where the server is still authenticated by its certificate.
package trust
