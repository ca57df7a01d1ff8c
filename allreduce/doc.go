// Package allreduce sums float32 buffers across the members of a ring over
// gRPC (reduce-scatter, then all-gather). It knows nothing of models.
//
// The package is the home of issue 4 and holds no code yet; see
// docs/ARCHITECTURE.md for where it plugs in.
package allreduce
