// Package worker runs one member of a training ring: it joins the
// coordinators, computes gradients on its share of each global batch with
// package models, sums them with package allreduce (each gradient's sum
// starting as soon as backward has produced it), and applies the same Adam
// step as every other replica. See DESIGN.md and docs/ARCHITECTURE.md.
package worker
