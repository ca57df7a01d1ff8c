//go:build amd64 && !purego

#include "textflag.h"

// BCEWithLogits kernels; the formulas are described in bce.go. Constants
// come from bceTab (c, a 32-byte vector a row):
#define T_ABS    0   // 0x7fffffff
#define T_NLOG2E 32  // -log2(e)
#define T_MAGIC  64  // 1.5*2^23
#define T_LN2HI  96
#define T_LN2LO  128
#define T_E2     160 // exp polynomial, e2..e6
#define T_E3     192
#define T_E4     224
#define T_E5     256
#define T_E6     288
#define T_ONE    320
#define T_G1     352 // log1p(e)/e polynomial, g1..g8
#define T_G2     384
#define T_G3     416
#define T_G4     448
#define T_G5     480
#define T_G6     512
#define T_G7     544
#define T_G8     576
#define T_CUTOFF 608
#define T_BIAS   640 // int32 127
#define T_LANES  672 // int32 0..7

// Register use, both kernels:
//   AX  logits   BX  targets   DX  grad (0: loss only)
//   SI  element index          R8  end of the full vectors (n rounded down)
//   R11 n        R12 bceTab

// ---------------------------------------------------------------- AVX-512
// Z31 |.| mask, Z30 -log2e, Z29 magic, Z28 ln2hi, Z27 ln2lo, Z26..Z22 e6..e2,
// Z21 1.0, Z20..Z13 g8..g1, Z12 cutoff, Z11 127, Z10 0.0,
// Z9 / Z8 float64 sums of lanes 0-7 / 8-15, K1 lanes in range.

// CORE512: Z0 = l, Z1 = x (lanes off K1 read as 0), Z6 = e = exp(-|l|),
// Z7 = log1p(e), Z2 = lin = max(l,0) - l*x. Clobbers Z3..Z5, K2.
#define CORE512 \
	VMOVUPS.Z    (AX)(SI*4), K1, Z0; \
	VMOVUPS.Z    (BX)(SI*4), K1, Z1; \
	VPANDD       Z31, Z0, Z2; \
	VMOVAPS      Z29, Z3; \
	VFMADD231PS  Z30, Z2, Z3; \
	VSUBPS       Z29, Z3, Z4; \
	VMOVAPS      Z2, Z5; \
	VFNMSUB231PS Z28, Z4, Z5; \
	VFNMADD231PS Z27, Z4, Z5; \
	VMOVAPS      Z26, Z6; \
	VFMADD213PS  Z25, Z5, Z6; \
	VFMADD213PS  Z24, Z5, Z6; \
	VFMADD213PS  Z23, Z5, Z6; \
	VFMADD213PS  Z22, Z5, Z6; \
	VFMADD213PS  Z21, Z5, Z6; \
	VFMADD213PS  Z21, Z5, Z6; \
	VPADDD       Z11, Z3, Z3; \
	VPSLLD       $23, Z3, Z3; \
	VCMPPS       $0x1a, Z12, Z2, K2; \
	VMULPS.Z     Z3, Z6, K2, Z6; \
	VMOVAPS      Z20, Z7; \
	VFMADD213PS  Z19, Z6, Z7; \
	VFMADD213PS  Z18, Z6, Z7; \
	VFMADD213PS  Z17, Z6, Z7; \
	VFMADD213PS  Z16, Z6, Z7; \
	VFMADD213PS  Z15, Z6, Z7; \
	VFMADD213PS  Z14, Z6, Z7; \
	VFMADD213PS  Z13, Z6, Z7; \
	VMULPS       Z6, Z7, Z7; \
	VFMADD213PS  Z6, Z6, Z7; \
	VMAXPS       Z10, Z0, Z2; \
	VFNMADD231PS Z1, Z0, Z2

// ACC512: the sums += float64(lin) + float64(log1p(e)). Clobbers Z2..Z4, Z7.
#define ACC512 \
	VCVTPS2PD     Y2, Z3; \
	VCVTPS2PD     Y7, Z4; \
	VADDPD        Z4, Z3, Z3; \
	VADDPD        Z3, Z9, Z9; \
	VEXTRACTF64X4 $1, Z2, Y2; \
	VEXTRACTF64X4 $1, Z7, Y7; \
	VCVTPS2PD     Y2, Z3; \
	VCVTPS2PD     Y7, Z4; \
	VADDPD        Z4, Z3, Z3; \
	VADDPD        Z3, Z8, Z8

// GRAD512: grad = sigmoid(l) - x into the lanes K1. Clobbers Z3, Z4, K3.
#define GRAD512 \
	VADDPS    Z21, Z6, Z3; \
	VDIVPS    Z3, Z21, Z3; \
	VMULPS    Z3, Z6, Z4; \
	VCMPPS    $0x1d, Z10, Z0, K3; \
	VMOVAPS   Z3, K3, Z4; \
	VSUBPS    Z1, Z4, Z4; \
	VMOVUPS   Z4, K1, (DX)(SI*4)

// func bceAVX512(n int, l, x, grad *float32, c *[bceTabRows][8]uint32) float64
TEXT ·bceAVX512(SB), NOSPLIT, $0-48
	MOVQ n+0(FP), R11
	MOVQ l+8(FP), AX
	MOVQ x+16(FP), BX
	MOVQ grad+24(FP), DX
	MOVQ c+32(FP), R12
	VPBROADCASTD T_ABS(R12), Z31
	VBROADCASTSS T_NLOG2E(R12), Z30
	VBROADCASTSS T_MAGIC(R12), Z29
	VBROADCASTSS T_LN2HI(R12), Z28
	VBROADCASTSS T_LN2LO(R12), Z27
	VBROADCASTSS T_E6(R12), Z26
	VBROADCASTSS T_E5(R12), Z25
	VBROADCASTSS T_E4(R12), Z24
	VBROADCASTSS T_E3(R12), Z23
	VBROADCASTSS T_E2(R12), Z22
	VBROADCASTSS T_ONE(R12), Z21
	VBROADCASTSS T_G8(R12), Z20
	VBROADCASTSS T_G7(R12), Z19
	VBROADCASTSS T_G6(R12), Z18
	VBROADCASTSS T_G5(R12), Z17
	VBROADCASTSS T_G4(R12), Z16
	VBROADCASTSS T_G3(R12), Z15
	VBROADCASTSS T_G2(R12), Z14
	VBROADCASTSS T_G1(R12), Z13
	VBROADCASTSS T_CUTOFF(R12), Z12
	VPBROADCASTD T_BIAS(R12), Z11
	VPXORD       Z10, Z10, Z10
	VPXORD       Z9, Z9, Z9
	VPXORD       Z8, Z8, Z8
	KXNORW       K1, K1, K1
	XORQ         SI, SI
	MOVQ         R11, R8
	ANDQ         $~15, R8
	TESTQ        DX, DX
	JZ           loss512

grad512:
	CMPQ SI, R8
	JGE  gtail512
	CORE512
	GRAD512
	ACC512
	ADDQ $16, SI
	JMP  grad512

gtail512:
	CMPQ SI, R11
	JGE  sum512
	MOVQ R11, CX
	SUBQ SI, CX
	MOVL $1, R9
	SHLL CX, R9
	DECL R9
	KMOVW R9, K1
	CORE512
	VMOVAPS.Z Z7, K1, Z7 // lanes past n: l = 0 gives lin = 0, log1p(1) != 0
	GRAD512
	ACC512
	JMP  sum512

loss512:
	CMPQ SI, R8
	JGE  ltail512
	CORE512
	ACC512
	ADDQ $16, SI
	JMP  loss512

ltail512:
	CMPQ SI, R11
	JGE  sum512
	MOVQ R11, CX
	SUBQ SI, CX
	MOVL $1, R9
	SHLL CX, R9
	DECL R9
	KMOVW R9, K1
	CORE512
	VMOVAPS.Z Z7, K1, Z7
	ACC512

sum512:
	VADDPD        Z8, Z9, Z9
	VEXTRACTF64X4 $1, Z9, Y8
	VADDPD        Y8, Y9, Y9
	VEXTRACTF128  $1, Y9, X8
	VADDPD        X8, X9, X9
	VUNPCKHPD     X9, X9, X8
	VADDSD        X8, X9, X9
	VZEROUPPER
	MOVSD         X9, ret+40(FP)
	RET

// ------------------------------------------------------------------- AVX2
// Constants are memory operands (R12). Y15 0.0, Y14 / Y13 float64 sums of
// lanes 0-3 / 4-7, Y12 lanes in range (tail only).

// CORE256: as CORE512, on Y0 = l, Y1 = x (loaded by the caller).
// Y6 = e, Y7 = log1p(e), Y2 = lin. Clobbers Y3..Y5.
#define CORE256 \
	VANDPS       T_ABS(R12), Y0, Y2; \
	VMOVAPS      T_MAGIC(R12), Y3; \
	VFMADD231PS  T_NLOG2E(R12), Y2, Y3; \
	VSUBPS       T_MAGIC(R12), Y3, Y4; \
	VMOVAPS      Y2, Y5; \
	VFNMSUB231PS T_LN2HI(R12), Y4, Y5; \
	VFNMADD231PS T_LN2LO(R12), Y4, Y5; \
	VMOVAPS      T_E6(R12), Y6; \
	VFMADD213PS  T_E5(R12), Y5, Y6; \
	VFMADD213PS  T_E4(R12), Y5, Y6; \
	VFMADD213PS  T_E3(R12), Y5, Y6; \
	VFMADD213PS  T_E2(R12), Y5, Y6; \
	VFMADD213PS  T_ONE(R12), Y5, Y6; \
	VFMADD213PS  T_ONE(R12), Y5, Y6; \
	VPADDD       T_BIAS(R12), Y3, Y3; \
	VPSLLD       $23, Y3, Y3; \
	VMULPS       Y3, Y6, Y6; \
	VCMPPS       $0x1e, T_CUTOFF(R12), Y2, Y4; \
	VANDNPS      Y6, Y4, Y6; \
	VMOVAPS      T_G8(R12), Y7; \
	VFMADD213PS  T_G7(R12), Y6, Y7; \
	VFMADD213PS  T_G6(R12), Y6, Y7; \
	VFMADD213PS  T_G5(R12), Y6, Y7; \
	VFMADD213PS  T_G4(R12), Y6, Y7; \
	VFMADD213PS  T_G3(R12), Y6, Y7; \
	VFMADD213PS  T_G2(R12), Y6, Y7; \
	VFMADD213PS  T_G1(R12), Y6, Y7; \
	VMULPS       Y6, Y7, Y7; \
	VFMADD213PS  Y6, Y6, Y7; \
	VMAXPS       Y15, Y0, Y2; \
	VFNMADD231PS Y1, Y0, Y2

// ACC256: the sums += float64(lin) + float64(log1p(e)). Clobbers Y2..Y4, Y7.
#define ACC256 \
	VCVTPS2PD    X2, Y3; \
	VCVTPS2PD    X7, Y4; \
	VADDPD       Y4, Y3, Y3; \
	VADDPD       Y3, Y14, Y14; \
	VEXTRACTF128 $1, Y2, X2; \
	VEXTRACTF128 $1, Y7, X7; \
	VCVTPS2PD    X2, Y3; \
	VCVTPS2PD    X7, Y4; \
	VADDPD       Y4, Y3, Y3; \
	VADDPD       Y3, Y13, Y13

// GRAD256: Y4 = sigmoid(l) - x. Clobbers Y3, Y5.
#define GRAD256 \
	VADDPS    T_ONE(R12), Y6, Y3; \
	VMOVAPS   T_ONE(R12), Y4; \
	VDIVPS    Y3, Y4, Y3; \
	VMULPS    Y3, Y6, Y4; \
	VCMPPS    $0x1d, Y15, Y0, Y5; \
	VBLENDVPS Y5, Y3, Y4, Y4; \
	VSUBPS    Y1, Y4, Y4

// func bceAVX2(n int, l, x, grad *float32, c *[bceTabRows][8]uint32) float64
TEXT ·bceAVX2(SB), NOSPLIT, $0-48
	MOVQ   n+0(FP), R11
	MOVQ   l+8(FP), AX
	MOVQ   x+16(FP), BX
	MOVQ   grad+24(FP), DX
	MOVQ   c+32(FP), R12
	VXORPS Y15, Y15, Y15
	VXORPD Y14, Y14, Y14
	VXORPD Y13, Y13, Y13
	XORQ   SI, SI
	MOVQ   R11, R8
	ANDQ   $~7, R8
	TESTQ  DX, DX
	JZ     loss256

grad256:
	CMPQ    SI, R8
	JGE     gtail256
	VMOVUPS (AX)(SI*4), Y0
	VMOVUPS (BX)(SI*4), Y1
	CORE256
	GRAD256
	VMOVUPS Y4, (DX)(SI*4)
	ACC256
	ADDQ    $8, SI
	JMP     grad256

gtail256:
	CMPQ         SI, R11
	JGE          sum256
	MOVQ         R11, CX
	SUBQ         SI, CX
	MOVQ         CX, X12
	VPBROADCASTD X12, Y12
	VPCMPGTD     T_LANES(R12), Y12, Y12
	VMASKMOVPS   (AX)(SI*4), Y12, Y0
	VMASKMOVPS   (BX)(SI*4), Y12, Y1
	CORE256
	VANDPS       Y12, Y7, Y7 // lanes past n: l = 0 gives lin = 0, log1p(1) != 0
	GRAD256
	VMASKMOVPS   Y4, Y12, (DX)(SI*4)
	ACC256
	JMP          sum256

loss256:
	CMPQ    SI, R8
	JGE     ltail256
	VMOVUPS (AX)(SI*4), Y0
	VMOVUPS (BX)(SI*4), Y1
	CORE256
	ACC256
	ADDQ    $8, SI
	JMP     loss256

ltail256:
	CMPQ         SI, R11
	JGE          sum256
	MOVQ         R11, CX
	SUBQ         SI, CX
	MOVQ         CX, X12
	VPBROADCASTD X12, Y12
	VPCMPGTD     T_LANES(R12), Y12, Y12
	VMASKMOVPS   (AX)(SI*4), Y12, Y0
	VMASKMOVPS   (BX)(SI*4), Y12, Y1
	CORE256
	VANDPS       Y12, Y7, Y7
	ACC256

sum256:
	VADDPD       Y13, Y14, Y14
	VEXTRACTF128 $1, Y14, X13
	VADDPD       X13, X14, X14
	VUNPCKHPD    X14, X14, X13
	VADDSD       X13, X14, X14
	VZEROUPPER
	MOVSD        X14, ret+40(FP)
	RET
