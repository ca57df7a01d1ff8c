//go:build !amd64 || purego

package kernels

// bceKernels lists the BCEWithLogits kernels this build can run, best
// first: only the pure-Go twin.
var bceKernels = []*bceKernel{bceGoKernel}

// bceBest is the kernel BCEWithLogits uses.
var bceBest = bceGoKernel

// bceHasAsm: this build has the assembly kernels.
const bceHasAsm = false
