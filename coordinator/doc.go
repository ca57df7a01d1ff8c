// Package coordinator is the cluster's control plane: a hashicorp/raft
// group whose replicated state machine holds jobs, workers and their leases,
// the ring generation and order, the shard plan and checkpoint manifests.
// It never touches gradients.
//
// The package is the home of issue 3 and holds no code yet; see
// docs/ARCHITECTURE.md for where it plugs in.
package coordinator
