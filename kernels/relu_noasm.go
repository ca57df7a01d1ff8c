//go:build !amd64 || purego

package kernels

// eltKernels lists the elementwise kernels this build can run, best first:
// only the pure-Go twin.
var eltKernels = []*eltKernel{eltGoKernel}

// eltBest is the kernel the elementwise functions use.
var eltBest = eltGoKernel

// eltHasAsm: this build has the assembly kernels.
const eltHasAsm = false
