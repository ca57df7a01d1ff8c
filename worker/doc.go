// Package worker runs one member of a training ring: it joins the
// coordinators, computes gradients on its share of each global batch with
// package models, sums them with package allreduce, and applies the same
// Adam step as every other replica.
//
// The package is the home of issue 5 and holds no code yet; see
// docs/ARCHITECTURE.md for where it plugs in.
package worker
