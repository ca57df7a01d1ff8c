//go:build !amd64 || purego

package kernels

// actKernels lists the Sigmoid and Tanh kernels this build can run, best
// first: only the pure-Go twin.
var actKernels = []*actKernel{actGoKernel}

// actBest is the kernel Sigmoid and Tanh use.
var actBest = actGoKernel

// actHasAsm: this build has the assembly kernels.
const actHasAsm = false
