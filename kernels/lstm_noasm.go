//go:build !amd64 || purego

package kernels

// lstmKernels lists the LSTM cell kernels this build can run, best first:
// only the pure-Go twin.
var lstmKernels = []*lstmKernel{lstmGoKernel}

// lstmBest is the kernel LSTMCell2D and LSTMCell2DGrad use.
var lstmBest = lstmGoKernel

// lstmHasAsm: this build has the assembly kernels.
const lstmHasAsm = false
