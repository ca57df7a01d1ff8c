// Package coordinator is the cluster's control plane: a hashicorp/raft
// group (node.go: raft over the coordinators' gRPC port through package
// rafttransport, bbolt log and stable stores, file snapshots) whose
// replicated state machine (fsm.go, state.go, commands.go) holds jobs,
// workers, the ring generation and order, and checkpoint manifests; the
// Coordinator gRPC service (service.go, lease.go) that workers and the
// command line call on any coordinator; and the Client (client.go) that
// fails over between coordinators by itself. It never touches gradients.
// See DESIGN.md.
package coordinator
