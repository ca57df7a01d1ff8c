//go:build amd64 && !purego

package kernels

import "golang.org/x/sys/cpu"

// lstmKernels lists the LSTM cell kernels this machine can run, best
// first (set once at init, read-only afterwards); the pure-Go twin is
// last. Tests run every one of them.
var lstmKernels = func() []*lstmKernel {
	var ks []*lstmKernel
	if cpu.X86.HasAVX512F {
		ks = append(ks, lstmAsmKernel("avx512", 16, lstmFwdAVX512, lstmBwdAVX512))
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ks = append(ks, lstmAsmKernel("avx2", 8, lstmFwdAVX2, lstmBwdAVX2))
	}
	return append(ks, lstmGoKernel)
}()

// lstmBest is the kernel LSTMCell2D and LSTMCell2DGrad use.
var lstmBest = lstmKernels[0]

// lstmHasAsm: this build has the assembly kernels.
const lstmHasAsm = true

// lstmAsmKernel runs the assembly loops fwd and bwd on the units of whole
// vectors of lanes, and the Go twin on the rest (the same operations, so
// the same bits).
func lstmAsmKernel(name string, lanes int,
	fwd func(n, full int, z, bias, cl, cu, c, tc, h *float32, tab *[actTabRows][8]uint32),
	bwd func(n, full int, a, tc, cl, cu, dh, dhR, dhD, dcR, dcD, dcOut *float32, tab *[actTabRows][8]uint32)) *lstmKernel {
	return &lstmKernel{
		name: name, lanes: lanes,
		fwd: func(z, bias, cl, cu, c, tc, h []float32) {
			n := len(c)
			full := n &^ (lanes - 1)
			if full > 0 {
				_, _, _, _, _, _ = z[5*n-1], bias[5*n-1], cl[n-1], cu[n-1], tc[n-1], h[n-1]
				fwd(n, full, &z[0], &bias[0], &cl[0], &cu[0], &c[0], &tc[0], &h[0], actTab)
			}
			if full < n {
				lstmFwdGo(z, bias, cl, cu, c, tc, h, full, n)
			}
		},
		bwd: func(a, tc, cl, cu, dh, dhR, dhD, dcR, dcD, dcOut []float32) {
			n := len(tc)
			full := n &^ (lanes - 1)
			if full > 0 {
				_, _, _, _, _, _, _, _, _ = a[5*n-1], cl[n-1], cu[n-1], dh[n-1], dhR[n-1], dhD[n-1], dcR[n-1], dcD[n-1], dcOut[2*n-1]
				bwd(n, full, &a[0], &tc[0], &cl[0], &cu[0], &dh[0], &dhR[0], &dhD[0], &dcR[0], &dcD[0], &dcOut[0], actTab)
			}
			if full < n {
				lstmBwdGo(a, tc, cl, cu, dh, dhR, dhD, dcR, dcD, dcOut, full, n)
			}
		},
	}
}

// The assembly loops (lstm_amd64.s) compute the units 0..full-1 of n,
// full a positive multiple of the vector width: the forward pass with the
// gates at z + k*n (k = 0..4, likewise bias), the backward with the gates
// at a + k*n and the gradients of cl and cu at dcOut and dcOut + n. tab
// is actTab. The AVX512 ones need AVX-512F, the AVX2 ones AVX2 and FMA.

//go:noescape
func lstmFwdAVX512(n, full int, z, bias, cl, cu, c, tc, h *float32, tab *[actTabRows][8]uint32)

//go:noescape
func lstmBwdAVX512(n, full int, a, tc, cl, cu, dh, dhR, dhD, dcR, dcD, dcOut *float32, tab *[actTabRows][8]uint32)

//go:noescape
func lstmFwdAVX2(n, full int, z, bias, cl, cu, c, tc, h *float32, tab *[actTabRows][8]uint32)

//go:noescape
func lstmBwdAVX2(n, full int, a, tc, cl, cu, dh, dhR, dhD, dcR, dcD, dcOut *float32, tab *[actTabRows][8]uint32)
