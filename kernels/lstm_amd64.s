//go:build amd64 && !purego

#include "textflag.h"
#include "act_amd64.h"

// LSTM cell kernels (lstm.go): the units 0..full-1 of n, full a positive
// multiple of the vector width, every pointer advanced by a vector each
// iteration. The gates of unit j are at P + k*n (k = 0..4: i, f_left,
// f_up, o, g): with R13 = 4n bytes, P, P+R13, P+2*R13, Q+2*R13 (Q =
// P+R13) and P+4*R13.

// Forward. AX P = z, BX Q = z+n, CX bias, DX bias+n, R8 cl, R9 cu,
// R10 c, DI tc, SI h, R11 units left, R12 actTab, R13 4n.
#define FWD_ARGS \
	MOVQ n+0(FP), R13; \
	SHLQ $2, R13; \
	MOVQ full+8(FP), R11; \
	MOVQ z+16(FP), AX; \
	LEAQ (AX)(R13*1), BX; \
	MOVQ bias+24(FP), CX; \
	LEAQ (CX)(R13*1), DX; \
	MOVQ cl+32(FP), R8; \
	MOVQ cu+40(FP), R9; \
	MOVQ c+48(FP), R10; \
	MOVQ tc+56(FP), DI; \
	MOVQ h+64(FP), SI; \
	MOVQ tab+72(FP), R12

#define FWD_NEXT(bytes) \
	ADDQ $bytes, AX; \
	ADDQ $bytes, BX; \
	ADDQ $bytes, CX; \
	ADDQ $bytes, DX; \
	ADDQ $bytes, R8; \
	ADDQ $bytes, R9; \
	ADDQ $bytes, R10; \
	ADDQ $bytes, DI; \
	ADDQ $bytes, SI

// Backward. AX P = a, BX Q = a+n, CX tc, DX cl, SI cu, DI dh, R8 dhR,
// R9 dhD, R10 dcR, R12 dcD, R14 dcOut, R11 units left, R13 4n.
#define BWD_ARGS \
	MOVQ n+0(FP), R13; \
	SHLQ $2, R13; \
	MOVQ full+8(FP), R11; \
	MOVQ a+16(FP), AX; \
	LEAQ (AX)(R13*1), BX; \
	MOVQ tc+24(FP), CX; \
	MOVQ cl+32(FP), DX; \
	MOVQ cu+40(FP), SI; \
	MOVQ dh+48(FP), DI; \
	MOVQ dhR+56(FP), R8; \
	MOVQ dhD+64(FP), R9; \
	MOVQ dcR+72(FP), R10; \
	MOVQ dcD+80(FP), R12; \
	MOVQ dcOut+88(FP), R14

#define BWD_NEXT(bytes) \
	ADDQ $bytes, AX; \
	ADDQ $bytes, BX; \
	ADDQ $bytes, CX; \
	ADDQ $bytes, DX; \
	ADDQ $bytes, SI; \
	ADDQ $bytes, DI; \
	ADDQ $bytes, R8; \
	ADDQ $bytes, R9; \
	ADDQ $bytes, R10; \
	ADDQ $bytes, R12; \
	ADDQ $bytes, R14

// ---------------------------------------------------------------- AVX-512
// Forward: the constants of act_amd64.h in Z15..Z31; Z1, Z7..Z10 the
// gates i, f_left, f_up, o, g; Z11, Z12 scratch.

// GATE512(src, bsrc, fn, keep): the gate at src plus the bias at bsrc,
// through fn, stored back to src and kept in keep.
#define GATE512(src, bsrc, fn, keep) \
	VMOVUPS src, Z0; \
	VADDPS  bsrc, Z0, Z0; \
	fn; \
	VMOVUPS Z4, src; \
	VMOVAPS Z4, keep

// func lstmFwdAVX512(n, full int, z, bias, cl, cu, c, tc, h *float32, tab *[actTabRows][8]uint32)
TEXT ·lstmFwdAVX512(SB), NOSPLIT, $0-80
	FWD_ARGS
	CONST512

fwd512:
	GATE512((AX), (CX), SIGMOID512, Z1)
	GATE512((AX)(R13*1), (CX)(R13*1), SIGMOID512, Z7)
	GATE512((AX)(R13*2), (CX)(R13*2), SIGMOID512, Z8)
	GATE512((BX)(R13*2), (DX)(R13*2), SIGMOID512, Z9)
	GATE512((AX)(R13*4), (CX)(R13*4), TANH512, Z10)
	VMULPS  (R8), Z7, Z11  // f_left*cl
	VMULPS  (R9), Z8, Z12  // f_up*cu
	VADDPS  Z12, Z11, Z11
	VMULPS  Z10, Z1, Z12   // i*g
	VADDPS  Z12, Z11, Z0   // c
	VMOVUPS Z0, (R10)
	TANH512
	VMOVUPS Z4, (DI)
	VMULPS  Z4, Z9, Z4     // h = o*tanh(c)
	VMOVUPS Z4, (SI)
	FWD_NEXT(64)
	SUBQ    $16, R11
	JNZ     fwd512
	VZEROUPPER
	RET

// Backward: Z31 1.0; Z0..Z5 i, f_left, f_up, o, g, tanh(c); Z6 dH,
// Z7 dC; Z8, Z9 scratch.

// DZ512(x, a, gate, dst): dst = (a*x)*(gate*(1-gate)), x in memory or
// a register. Clobbers Z8, Z9.
#define DZ512(x, a, gate, dst) \
	VMULPS  x, a, Z8; \
	VSUBPS  gate, Z31, Z9; \
	VMULPS  Z9, gate, Z9; \
	VMULPS  Z9, Z8, Z8; \
	VMOVUPS Z8, dst

// func lstmBwdAVX512(n, full int, a, tc, cl, cu, dh, dhR, dhD, dcR, dcD, dcOut *float32, tab *[actTabRows][8]uint32)
TEXT ·lstmBwdAVX512(SB), NOSPLIT, $0-104
	MOVQ         tab+96(FP), R12
	VBROADCASTSS T_ONE(R12), Z31
	BWD_ARGS

bwd512:
	VMOVUPS (AX), Z0
	VMOVUPS (AX)(R13*1), Z1
	VMOVUPS (AX)(R13*2), Z2
	VMOVUPS (BX)(R13*2), Z3
	VMOVUPS (AX)(R13*4), Z4
	VMOVUPS (CX), Z5
	VMOVUPS (DI), Z6
	VADDPS  (R8), Z6, Z6   // dh + dhR
	VADDPS  (R9), Z6, Z6   // dH
	VMOVUPS (R10), Z7
	VADDPS  (R12), Z7, Z7  // dcR + dcD
	VMULPS  Z5, Z5, Z8
	VSUBPS  Z8, Z31, Z8    // 1 - t*t
	VMULPS  Z3, Z6, Z9     // dH*o
	VMULPS  Z8, Z9, Z9
	VADDPS  Z9, Z7, Z7     // dC
	DZ512(Z4, Z7, Z0, (AX))
	DZ512((DX), Z7, Z1, (AX)(R13*1))
	DZ512((SI), Z7, Z2, (AX)(R13*2))
	DZ512(Z5, Z6, Z3, (BX)(R13*2))
	VMULPS  Z0, Z7, Z8     // dC*i
	VMULPS  Z4, Z4, Z9
	VSUBPS  Z9, Z31, Z9    // 1 - g*g
	VMULPS  Z9, Z8, Z8
	VMOVUPS Z8, (AX)(R13*4)
	VMULPS  Z1, Z7, Z8     // dC*f_left
	VMOVUPS Z8, (R14)
	VMULPS  Z2, Z7, Z8     // dC*f_up
	VMOVUPS Z8, (R14)(R13*1)
	BWD_NEXT(64)
	SUBQ    $16, R11
	JNZ     bwd512
	VZEROUPPER
	RET

// ------------------------------------------------------------------- AVX2
// Forward: constants as memory operands (R12), Y15 0.0; Y1, Y8..Y11 the
// gates i, f_left, f_up, o, g; Y12, Y13 scratch.

#define GATE256(src, bsrc, fn, keep) \
	VMOVUPS src, Y0; \
	VADDPS  bsrc, Y0, Y0; \
	fn; \
	VMOVUPS Y4, src; \
	VMOVAPS Y4, keep

// func lstmFwdAVX2(n, full int, z, bias, cl, cu, c, tc, h *float32, tab *[actTabRows][8]uint32)
TEXT ·lstmFwdAVX2(SB), NOSPLIT, $0-80
	FWD_ARGS
	VXORPS Y15, Y15, Y15

fwd256:
	GATE256((AX), (CX), SIGMOID256, Y1)
	GATE256((AX)(R13*1), (CX)(R13*1), SIGMOID256, Y8)
	GATE256((AX)(R13*2), (CX)(R13*2), SIGMOID256, Y9)
	GATE256((BX)(R13*2), (DX)(R13*2), SIGMOID256, Y10)
	GATE256((AX)(R13*4), (CX)(R13*4), TANH256, Y11)
	VMULPS  (R8), Y8, Y12  // f_left*cl
	VMULPS  (R9), Y9, Y13  // f_up*cu
	VADDPS  Y13, Y12, Y12
	VMULPS  Y11, Y1, Y13   // i*g
	VADDPS  Y13, Y12, Y0   // c
	VMOVUPS Y0, (R10)
	TANH256
	VMOVUPS Y4, (DI)
	VMULPS  Y4, Y10, Y4    // h = o*tanh(c)
	VMOVUPS Y4, (SI)
	FWD_NEXT(32)
	SUBQ    $8, R11
	JNZ     fwd256
	VZEROUPPER
	RET

// Backward: Y15 1.0; Y0..Y5 i, f_left, f_up, o, g, tanh(c); Y6 dH,
// Y7 dC; Y8, Y9 scratch.

#define DZ256(x, a, gate, dst) \
	VMULPS  x, a, Y8; \
	VSUBPS  gate, Y15, Y9; \
	VMULPS  Y9, gate, Y9; \
	VMULPS  Y9, Y8, Y8; \
	VMOVUPS Y8, dst

// func lstmBwdAVX2(n, full int, a, tc, cl, cu, dh, dhR, dhD, dcR, dcD, dcOut *float32, tab *[actTabRows][8]uint32)
TEXT ·lstmBwdAVX2(SB), NOSPLIT, $0-104
	MOVQ    tab+96(FP), R12
	VMOVUPS T_ONE(R12), Y15
	BWD_ARGS

bwd256:
	VMOVUPS (AX), Y0
	VMOVUPS (AX)(R13*1), Y1
	VMOVUPS (AX)(R13*2), Y2
	VMOVUPS (BX)(R13*2), Y3
	VMOVUPS (AX)(R13*4), Y4
	VMOVUPS (CX), Y5
	VMOVUPS (DI), Y6
	VADDPS  (R8), Y6, Y6   // dh + dhR
	VADDPS  (R9), Y6, Y6   // dH
	VMOVUPS (R10), Y7
	VADDPS  (R12), Y7, Y7  // dcR + dcD
	VMULPS  Y5, Y5, Y8
	VSUBPS  Y8, Y15, Y8    // 1 - t*t
	VMULPS  Y3, Y6, Y9     // dH*o
	VMULPS  Y8, Y9, Y9
	VADDPS  Y9, Y7, Y7     // dC
	DZ256(Y4, Y7, Y0, (AX))
	DZ256((DX), Y7, Y1, (AX)(R13*1))
	DZ256((SI), Y7, Y2, (AX)(R13*2))
	DZ256(Y5, Y6, Y3, (BX)(R13*2))
	VMULPS  Y0, Y7, Y8     // dC*i
	VMULPS  Y4, Y4, Y9
	VSUBPS  Y9, Y15, Y9    // 1 - g*g
	VMULPS  Y9, Y8, Y8
	VMOVUPS Y8, (AX)(R13*4)
	VMULPS  Y1, Y7, Y8     // dC*f_left
	VMOVUPS Y8, (R14)
	VMULPS  Y2, Y7, Y8     // dC*f_up
	VMOVUPS Y8, (R14)(R13*1)
	BWD_NEXT(32)
	SUBQ    $8, R11
	JNZ     bwd256
	VZEROUPPER
	RET
