//go:build !amd64 || purego

package kernels

// peakAsm: no assembly in this build.
func peakAsm() []PeakKernel { return nil }

// peakHasAsm: this build has the assembly loops.
const peakHasAsm = false
