//go:build amd64 && !purego

#include "textflag.h"

// Elementwise kernels (relu.go describes them). Register use, all kernels:
//   R11 n          SI element index     R8 end of the full vectors
//   AX  x / d / g  BX  b / y / act      DX dst (maskAcc), relu flag (addBias)
// AVX-512: Z31 = +0, K1 = lanes of the tail. AVX2: Y15 = +0, Y14 = lanes
// of the tail (all ones / zero).
//
// ReLU is VMAXPS with +0 as the first source and x as the second: MAXPS
// returns the second source when the first is not greater, so when x is
// NaN or both are zeros, and ReLU(-0) = -0, ReLU(NaN) = NaN.
// The derivative's mask is the compare NLE_UQ (0x16): y > 0 or unordered.

// lane indices 0..7, for the AVX2 tail masks
DATA eltLanes<>+0(SB)/4, $0
DATA eltLanes<>+4(SB)/4, $1
DATA eltLanes<>+8(SB)/4, $2
DATA eltLanes<>+12(SB)/4, $3
DATA eltLanes<>+16(SB)/4, $4
DATA eltLanes<>+20(SB)/4, $5
DATA eltLanes<>+24(SB)/4, $6
DATA eltLanes<>+28(SB)/4, $7
GLOBL eltLanes<>(SB), RODATA|NOPTR, $32

// MASK512: K1 = lanes [0, min(max(R11-SI, 0), 16)). Clobbers CX, R9, R10.
#define MASK512 \
	MOVQ    R11, CX; \
	SUBQ    SI, CX; \
	XORQ    R10, R10; \
	CMPQ    CX, R10; \
	CMOVQLT R10, CX; \
	MOVQ    $16, R10; \
	CMPQ    CX, R10; \
	CMOVQGT R10, CX; \
	MOVL    $1, R9; \
	SHLL    CX, R9; \
	DECL    R9; \
	KMOVW   R9, K1

// MASK256: Y14 lane i all ones iff i < R11-SI. Clobbers CX.
#define MASK256 \
	MOVQ         R11, CX; \
	SUBQ         SI, CX; \
	MOVQ         CX, X14; \
	VPBROADCASTD X14, Y14; \
	VPCMPGTD     eltLanes<>(SB), Y14, Y14

// PROLOGUE: R8 = n rounded down to a multiple of lanes, SI = 0.
#define PROLOGUE(lanes) \
	XORQ SI, SI; \
	MOVQ R11, R8; \
	ANDQ $~(lanes-1), R8

// ================================================================ AVX-512

// func reluAVX512(n int, x *float32)
TEXT ·reluAVX512(SB), NOSPLIT, $0-16
	MOVQ   n+0(FP), R11
	MOVQ   x+8(FP), AX
	VPXORD Z31, Z31, Z31
	PROLOGUE(16)

loop:
	CMPQ    SI, R8
	JGE     tail
	VMAXPS  (AX)(SI*4), Z31, Z0
	VMOVUPS Z0, (AX)(SI*4)
	ADDQ    $16, SI
	JMP     loop

tail:
	CMPQ      SI, R11
	JGE       done
	MASK512
	VMOVUPS.Z (AX)(SI*4), K1, Z0
	VMAXPS    Z0, Z31, Z0
	VMOVUPS   Z0, K1, (AX)(SI*4)

done:
	VZEROUPPER
	RET

// func reluGradAVX512(n int, d, y *float32)
TEXT ·reluGradAVX512(SB), NOSPLIT, $0-24
	MOVQ   n+0(FP), R11
	MOVQ   d+8(FP), AX
	MOVQ   y+16(FP), BX
	VPXORD Z31, Z31, Z31
	PROLOGUE(16)

loop:
	CMPQ      SI, R8
	JGE       tail
	VMOVUPS   (BX)(SI*4), Z1
	VCMPPS    $0x16, Z31, Z1, K2
	VMOVUPS.Z (AX)(SI*4), K2, Z0
	VMOVUPS   Z0, (AX)(SI*4)
	ADDQ      $16, SI
	JMP       loop

tail:
	CMPQ      SI, R11
	JGE       done
	MASK512
	VMOVUPS.Z (BX)(SI*4), K1, Z1 // lanes past n: y = 0, masked off
	VCMPPS    $0x16, Z31, Z1, K2
	VMOVUPS.Z (AX)(SI*4), K2, Z0
	VMOVUPS   Z0, K1, (AX)(SI*4)

done:
	VZEROUPPER
	RET

// func addBiasAVX512(n int, x *float32, b float32, relu int)
TEXT ·addBiasAVX512(SB), NOSPLIT, $0-32
	MOVQ         n+0(FP), R11
	MOVQ         x+8(FP), AX
	VBROADCASTSS b+16(FP), Z30
	MOVQ         relu+24(FP), DX
	VPXORD       Z31, Z31, Z31
	PROLOGUE(16)
	TESTQ        DX, DX
	JNZ          rloop

ploop:
	CMPQ    SI, R8
	JGE     ptail
	VADDPS  (AX)(SI*4), Z30, Z0
	VMOVUPS Z0, (AX)(SI*4)
	ADDQ    $16, SI
	JMP     ploop

ptail:
	CMPQ      SI, R11
	JGE       done
	MASK512
	VMOVUPS.Z (AX)(SI*4), K1, Z0
	VADDPS    Z0, Z30, Z0
	VMOVUPS   Z0, K1, (AX)(SI*4)
	JMP       done

rloop:
	CMPQ    SI, R8
	JGE     rtail
	VADDPS  (AX)(SI*4), Z30, Z0
	VMAXPS  Z0, Z31, Z0
	VMOVUPS Z0, (AX)(SI*4)
	ADDQ    $16, SI
	JMP     rloop

rtail:
	CMPQ      SI, R11
	JGE       done
	MASK512
	VMOVUPS.Z (AX)(SI*4), K1, Z0
	VADDPS    Z0, Z30, Z0
	VMAXPS    Z0, Z31, Z0
	VMOVUPS   Z0, K1, (AX)(SI*4)

done:
	VZEROUPPER
	RET

// func addVecAVX512(n int, x, b *float32, relu int)
TEXT ·addVecAVX512(SB), NOSPLIT, $0-32
	MOVQ   n+0(FP), R11
	MOVQ   x+8(FP), AX
	MOVQ   b+16(FP), BX
	MOVQ   relu+24(FP), DX
	VPXORD Z31, Z31, Z31
	PROLOGUE(16)
	TESTQ  DX, DX
	JNZ    rloop

ploop:
	CMPQ    SI, R8
	JGE     ptail
	VMOVUPS (BX)(SI*4), Z1
	VADDPS  (AX)(SI*4), Z1, Z0
	VMOVUPS Z0, (AX)(SI*4)
	ADDQ    $16, SI
	JMP     ploop

ptail:
	CMPQ      SI, R11
	JGE       done
	MASK512
	VMOVUPS.Z (BX)(SI*4), K1, Z1
	VMOVUPS.Z (AX)(SI*4), K1, Z0
	VADDPS    Z1, Z0, Z0
	VMOVUPS   Z0, K1, (AX)(SI*4)
	JMP       done

rloop:
	CMPQ    SI, R8
	JGE     rtail
	VMOVUPS (BX)(SI*4), Z1
	VADDPS  (AX)(SI*4), Z1, Z0
	VMAXPS  Z0, Z31, Z0
	VMOVUPS Z0, (AX)(SI*4)
	ADDQ    $16, SI
	JMP     rloop

rtail:
	CMPQ      SI, R11
	JGE       done
	MASK512
	VMOVUPS.Z (BX)(SI*4), K1, Z1
	VMOVUPS.Z (AX)(SI*4), K1, Z0
	VADDPS    Z1, Z0, Z0
	VMAXPS    Z0, Z31, Z0
	VMOVUPS   Z0, K1, (AX)(SI*4)

done:
	VZEROUPPER
	RET

// MSTEP512: the 16 elements at byte offset off from SI: g masked by act,
// stored back, added to acc. Clobbers Z4, Z5, K2.
#define MSTEP512(off, acc) \
	VMOVUPS   off(BX)(SI*4), Z4; \
	VCMPPS    $0x16, Z31, Z4, K2; \
	VMOVUPS.Z off(AX)(SI*4), K2, Z5; \
	VMOVUPS   Z5, off(AX)(SI*4); \
	VADDPS    Z5, acc, acc

// MTAIL512: up to 16 elements from SI (none if SI >= n) into acc; SI += 16.
#define MTAIL512(acc) \
	MASK512; \
	VMOVUPS.Z (BX)(SI*4), K1, Z4; \
	VCMPPS    $0x16, Z31, Z4, K2; \
	VMOVUPS.Z (AX)(SI*4), K2, Z5; \
	VMOVUPS   Z5, K1, (AX)(SI*4); \
	VADDPS    Z5, acc, acc; \
	ADDQ      $16, SI

// PTAIL512: MTAIL512 without act.
#define PTAIL512(acc) \
	MASK512; \
	VMOVUPS.Z (AX)(SI*4), K1, Z5; \
	VADDPS    Z5, acc, acc; \
	ADDQ      $16, SI

// func maskSumAVX512(n int, gp, act *float32) float32
// Partial sum s[k] (k < 64) is lane k%16 of Z(k/16).
TEXT ·maskSumAVX512(SB), NOSPLIT, $0-28
	MOVQ   n+0(FP), R11
	MOVQ   gp+8(FP), AX
	MOVQ   act+16(FP), BX
	VPXORD Z31, Z31, Z31
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	PROLOGUE(64)
	TESTQ  BX, BX
	JZ     ploop

mloop:
	CMPQ SI, R8
	JGE  mtail
	MSTEP512(0, Z0)
	MSTEP512(64, Z1)
	MSTEP512(128, Z2)
	MSTEP512(192, Z3)
	ADDQ $64, SI
	JMP  mloop

mtail:
	CMPQ SI, R11
	JGE  reduce
	MTAIL512(Z0)
	MTAIL512(Z1)
	MTAIL512(Z2)
	MTAIL512(Z3)
	JMP  reduce

ploop:
	CMPQ   SI, R8
	JGE    ptail
	VADDPS (AX)(SI*4), Z0, Z0
	VADDPS 64(AX)(SI*4), Z1, Z1
	VADDPS 128(AX)(SI*4), Z2, Z2
	VADDPS 192(AX)(SI*4), Z3, Z3
	ADDQ   $64, SI
	JMP    ploop

ptail:
	CMPQ SI, R11
	JGE  reduce
	PTAIL512(Z0)
	PTAIL512(Z1)
	PTAIL512(Z2)
	PTAIL512(Z3)

reduce:
	VADDPS        Z1, Z0, Z0 // s[l] + s[16+l]
	VADDPS        Z3, Z2, Z2 // s[32+l] + s[48+l]
	VADDPS        Z2, Z0, Z0 // t[l], l < 16
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0 // u[l] = t[l] + t[l+8]
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0 // v[l] = u[l] + u[l+4]
	VMOVHLPS      X0, X0, X1
	VADDPS        X1, X0, X0 // w[l] = v[l] + v[l+2]
	VMOVSHDUP     X0, X1
	VADDSS        X1, X0, X0 // w[0] + w[1]
	VZEROUPPER
	MOVSS         X0, ret+24(FP)
	RET

// func maskAccAVX512(n int, dst, gp, act *float32)
TEXT ·maskAccAVX512(SB), NOSPLIT, $0-32
	MOVQ   n+0(FP), R11
	MOVQ   dst+8(FP), DX
	MOVQ   gp+16(FP), AX
	MOVQ   act+24(FP), BX
	VPXORD Z31, Z31, Z31
	PROLOGUE(16)
	TESTQ  BX, BX
	JZ     ploop

mloop:
	CMPQ      SI, R8
	JGE       mtail
	VMOVUPS   (BX)(SI*4), Z1
	VCMPPS    $0x16, Z31, Z1, K2
	VMOVUPS.Z (AX)(SI*4), K2, Z0
	VMOVUPS   Z0, (AX)(SI*4)
	VMOVUPS   (DX)(SI*4), Z2
	VADDPS    Z0, Z2, Z0 // dst + g
	VMOVUPS   Z0, (DX)(SI*4)
	ADDQ      $16, SI
	JMP       mloop

mtail:
	CMPQ      SI, R11
	JGE       done
	MASK512
	VMOVUPS.Z (BX)(SI*4), K1, Z1
	VCMPPS    $0x16, Z31, Z1, K2
	VMOVUPS.Z (AX)(SI*4), K2, Z0
	VMOVUPS   Z0, K1, (AX)(SI*4)
	VMOVUPS.Z (DX)(SI*4), K1, Z2
	VADDPS    Z0, Z2, Z0
	VMOVUPS   Z0, K1, (DX)(SI*4)
	JMP       done

ploop:
	CMPQ    SI, R8
	JGE     ptail
	VMOVUPS (DX)(SI*4), Z2
	VADDPS  (AX)(SI*4), Z2, Z0
	VMOVUPS Z0, (DX)(SI*4)
	ADDQ    $16, SI
	JMP     ploop

ptail:
	CMPQ      SI, R11
	JGE       done
	MASK512
	VMOVUPS.Z (DX)(SI*4), K1, Z2
	VMOVUPS.Z (AX)(SI*4), K1, Z0
	VADDPS    Z0, Z2, Z0
	VMOVUPS   Z0, K1, (DX)(SI*4)

done:
	VZEROUPPER
	RET

// =================================================================== AVX2

// func reluAVX2(n int, x *float32)
TEXT ·reluAVX2(SB), NOSPLIT, $0-16
	MOVQ   n+0(FP), R11
	MOVQ   x+8(FP), AX
	VXORPS Y15, Y15, Y15
	PROLOGUE(8)

loop:
	CMPQ    SI, R8
	JGE     tail
	VMAXPS  (AX)(SI*4), Y15, Y0
	VMOVUPS Y0, (AX)(SI*4)
	ADDQ    $8, SI
	JMP     loop

tail:
	CMPQ       SI, R11
	JGE        done
	MASK256
	VMASKMOVPS (AX)(SI*4), Y14, Y0
	VMAXPS     Y0, Y15, Y0
	VMASKMOVPS Y0, Y14, (AX)(SI*4)

done:
	VZEROUPPER
	RET

// func reluGradAVX2(n int, d, y *float32)
TEXT ·reluGradAVX2(SB), NOSPLIT, $0-24
	MOVQ   n+0(FP), R11
	MOVQ   d+8(FP), AX
	MOVQ   y+16(FP), BX
	VXORPS Y15, Y15, Y15
	PROLOGUE(8)

loop:
	CMPQ    SI, R8
	JGE     tail
	VMOVUPS (BX)(SI*4), Y1
	VCMPPS  $0x16, Y15, Y1, Y1
	VANDPS  (AX)(SI*4), Y1, Y0
	VMOVUPS Y0, (AX)(SI*4)
	ADDQ    $8, SI
	JMP     loop

tail:
	CMPQ       SI, R11
	JGE        done
	MASK256
	VMASKMOVPS (BX)(SI*4), Y14, Y1 // lanes past n: y = 0, masked off
	VCMPPS     $0x16, Y15, Y1, Y1
	VMASKMOVPS (AX)(SI*4), Y1, Y0
	VMASKMOVPS Y0, Y14, (AX)(SI*4)

done:
	VZEROUPPER
	RET

// func addBiasAVX2(n int, x *float32, b float32, relu int)
TEXT ·addBiasAVX2(SB), NOSPLIT, $0-32
	MOVQ         n+0(FP), R11
	MOVQ         x+8(FP), AX
	VBROADCASTSS b+16(FP), Y13
	MOVQ         relu+24(FP), DX
	VXORPS       Y15, Y15, Y15
	PROLOGUE(8)
	TESTQ        DX, DX
	JNZ          rloop

ploop:
	CMPQ    SI, R8
	JGE     ptail
	VADDPS  (AX)(SI*4), Y13, Y0
	VMOVUPS Y0, (AX)(SI*4)
	ADDQ    $8, SI
	JMP     ploop

ptail:
	CMPQ       SI, R11
	JGE        done
	MASK256
	VMASKMOVPS (AX)(SI*4), Y14, Y0
	VADDPS     Y0, Y13, Y0
	VMASKMOVPS Y0, Y14, (AX)(SI*4)
	JMP        done

rloop:
	CMPQ    SI, R8
	JGE     rtail
	VADDPS  (AX)(SI*4), Y13, Y0
	VMAXPS  Y0, Y15, Y0
	VMOVUPS Y0, (AX)(SI*4)
	ADDQ    $8, SI
	JMP     rloop

rtail:
	CMPQ       SI, R11
	JGE        done
	MASK256
	VMASKMOVPS (AX)(SI*4), Y14, Y0
	VADDPS     Y0, Y13, Y0
	VMAXPS     Y0, Y15, Y0
	VMASKMOVPS Y0, Y14, (AX)(SI*4)

done:
	VZEROUPPER
	RET

// func addVecAVX2(n int, x, b *float32, relu int)
TEXT ·addVecAVX2(SB), NOSPLIT, $0-32
	MOVQ   n+0(FP), R11
	MOVQ   x+8(FP), AX
	MOVQ   b+16(FP), BX
	MOVQ   relu+24(FP), DX
	VXORPS Y15, Y15, Y15
	PROLOGUE(8)
	TESTQ  DX, DX
	JNZ    rloop

ploop:
	CMPQ    SI, R8
	JGE     ptail
	VMOVUPS (BX)(SI*4), Y1
	VADDPS  (AX)(SI*4), Y1, Y0
	VMOVUPS Y0, (AX)(SI*4)
	ADDQ    $8, SI
	JMP     ploop

ptail:
	CMPQ       SI, R11
	JGE        done
	MASK256
	VMASKMOVPS (BX)(SI*4), Y14, Y1
	VMASKMOVPS (AX)(SI*4), Y14, Y0
	VADDPS     Y1, Y0, Y0
	VMASKMOVPS Y0, Y14, (AX)(SI*4)
	JMP        done

rloop:
	CMPQ    SI, R8
	JGE     rtail
	VMOVUPS (BX)(SI*4), Y1
	VADDPS  (AX)(SI*4), Y1, Y0
	VMAXPS  Y0, Y15, Y0
	VMOVUPS Y0, (AX)(SI*4)
	ADDQ    $8, SI
	JMP     rloop

rtail:
	CMPQ       SI, R11
	JGE        done
	MASK256
	VMASKMOVPS (BX)(SI*4), Y14, Y1
	VMASKMOVPS (AX)(SI*4), Y14, Y0
	VADDPS     Y1, Y0, Y0
	VMAXPS     Y0, Y15, Y0
	VMASKMOVPS Y0, Y14, (AX)(SI*4)

done:
	VZEROUPPER
	RET

// MSTEP256: the 8 elements at byte offset off from SI: g masked by act,
// stored back, added to acc. Clobbers Y8, Y9.
#define MSTEP256(off, acc) \
	VMOVUPS off(BX)(SI*4), Y8; \
	VCMPPS  $0x16, Y15, Y8, Y8; \
	VANDPS  off(AX)(SI*4), Y8, Y9; \
	VMOVUPS Y9, off(AX)(SI*4); \
	VADDPS  Y9, acc, acc

// MTAIL256: up to 8 elements from SI (none if SI >= n) into acc; SI += 8.
#define MTAIL256(acc) \
	MASK256; \
	VMASKMOVPS (BX)(SI*4), Y14, Y8; \
	VCMPPS     $0x16, Y15, Y8, Y8; \
	VMASKMOVPS (AX)(SI*4), Y8, Y9; \
	VMASKMOVPS Y9, Y14, (AX)(SI*4); \
	VADDPS     Y9, acc, acc; \
	ADDQ       $8, SI

// PTAIL256: MTAIL256 without act.
#define PTAIL256(acc) \
	MASK256; \
	VMASKMOVPS (AX)(SI*4), Y14, Y9; \
	VADDPS     Y9, acc, acc; \
	ADDQ       $8, SI

// func maskSumAVX2(n int, gp, act *float32) float32
// Partial sum s[k] (k < 64) is lane k%8 of Y(k/8).
TEXT ·maskSumAVX2(SB), NOSPLIT, $0-28
	MOVQ   n+0(FP), R11
	MOVQ   gp+8(FP), AX
	MOVQ   act+16(FP), BX
	VXORPS Y15, Y15, Y15
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	PROLOGUE(64)
	TESTQ  BX, BX
	JZ     ploop

mloop:
	CMPQ SI, R8
	JGE  mtail
	MSTEP256(0, Y0)
	MSTEP256(32, Y1)
	MSTEP256(64, Y2)
	MSTEP256(96, Y3)
	MSTEP256(128, Y4)
	MSTEP256(160, Y5)
	MSTEP256(192, Y6)
	MSTEP256(224, Y7)
	ADDQ $64, SI
	JMP  mloop

mtail:
	CMPQ SI, R11
	JGE  reduce
	MTAIL256(Y0)
	MTAIL256(Y1)
	MTAIL256(Y2)
	MTAIL256(Y3)
	MTAIL256(Y4)
	MTAIL256(Y5)
	MTAIL256(Y6)
	MTAIL256(Y7)
	JMP  reduce

ploop:
	CMPQ   SI, R8
	JGE    ptail
	VADDPS (AX)(SI*4), Y0, Y0
	VADDPS 32(AX)(SI*4), Y1, Y1
	VADDPS 64(AX)(SI*4), Y2, Y2
	VADDPS 96(AX)(SI*4), Y3, Y3
	VADDPS 128(AX)(SI*4), Y4, Y4
	VADDPS 160(AX)(SI*4), Y5, Y5
	VADDPS 192(AX)(SI*4), Y6, Y6
	VADDPS 224(AX)(SI*4), Y7, Y7
	ADDQ   $64, SI
	JMP    ploop

ptail:
	CMPQ SI, R11
	JGE  reduce
	PTAIL256(Y0)
	PTAIL256(Y1)
	PTAIL256(Y2)
	PTAIL256(Y3)
	PTAIL256(Y4)
	PTAIL256(Y5)
	PTAIL256(Y6)
	PTAIL256(Y7)

reduce:
	VADDPS       Y2, Y0, Y0 // s[l] + s[16+l], l < 8
	VADDPS       Y6, Y4, Y4 // s[32+l] + s[48+l]
	VADDPS       Y4, Y0, Y0 // t[l], l < 8
	VADDPS       Y3, Y1, Y1 // the same for l = 8..15
	VADDPS       Y7, Y5, Y5
	VADDPS       Y5, Y1, Y1 // t[8+l]
	VADDPS       Y1, Y0, Y0 // u[l] = t[l] + t[l+8]
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0 // v[l] = u[l] + u[l+4]
	VMOVHLPS     X0, X0, X1
	VADDPS       X1, X0, X0 // w[l] = v[l] + v[l+2]
	VMOVSHDUP    X0, X1
	VADDSS       X1, X0, X0 // w[0] + w[1]
	VZEROUPPER
	MOVSS        X0, ret+24(FP)
	RET

// func maskAccAVX2(n int, dst, gp, act *float32)
TEXT ·maskAccAVX2(SB), NOSPLIT, $0-32
	MOVQ   n+0(FP), R11
	MOVQ   dst+8(FP), DX
	MOVQ   gp+16(FP), AX
	MOVQ   act+24(FP), BX
	VXORPS Y15, Y15, Y15
	PROLOGUE(8)
	TESTQ  BX, BX
	JZ     ploop

mloop:
	CMPQ    SI, R8
	JGE     mtail
	VMOVUPS (BX)(SI*4), Y1
	VCMPPS  $0x16, Y15, Y1, Y1
	VANDPS  (AX)(SI*4), Y1, Y0
	VMOVUPS Y0, (AX)(SI*4)
	VMOVUPS (DX)(SI*4), Y2
	VADDPS  Y0, Y2, Y0 // dst + g
	VMOVUPS Y0, (DX)(SI*4)
	ADDQ    $8, SI
	JMP     mloop

mtail:
	CMPQ       SI, R11
	JGE        done
	MASK256
	VMASKMOVPS (BX)(SI*4), Y14, Y1
	VCMPPS     $0x16, Y15, Y1, Y1
	VMASKMOVPS (AX)(SI*4), Y1, Y0
	VMASKMOVPS Y0, Y14, (AX)(SI*4)
	VMASKMOVPS (DX)(SI*4), Y14, Y2
	VADDPS     Y0, Y2, Y0
	VMASKMOVPS Y0, Y14, (DX)(SI*4)
	JMP        done

ploop:
	CMPQ    SI, R8
	JGE     ptail
	VMOVUPS (DX)(SI*4), Y2
	VADDPS  (AX)(SI*4), Y2, Y0
	VMOVUPS Y0, (DX)(SI*4)
	ADDQ    $8, SI
	JMP     ploop

ptail:
	CMPQ       SI, R11
	JGE        done
	MASK256
	VMASKMOVPS (DX)(SI*4), Y14, Y2
	VMASKMOVPS (AX)(SI*4), Y14, Y0
	VADDPS     Y0, Y2, Y0
	VMASKMOVPS Y0, Y14, (DX)(SI*4)

done:
	VZEROUPPER
	RET
