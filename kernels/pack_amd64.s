//go:build amd64 && !purego

#include "textflag.h"

// Packing helpers for the AVX kernels (they need AVX only).

// func packStripsAVX(kc int, src *float32, ld int, dst *float32, w int, strips int)
// Packs strips side-by-side strips of w floats (w = 6, 8, 16 or 32): for
// l < kc and s < strips, dst[s*kc*w + l*w : +w] = src[l*ld + s*w : +w].
// Each source row is read contiguously, which the hardware prefetchers
// follow.
TEXT ·packStripsAVX(SB), NOSPLIT, $0-48
	MOVQ  kc+0(FP), CX
	MOVQ  src+8(FP), SI
	MOVQ  ld+16(FP), R8
	SHLQ  $2, R8
	MOVQ  dst+24(FP), DI
	MOVQ  w+32(FP), AX
	MOVQ  strips+40(FP), DX
	MOVQ  CX, R9
	IMULQ AX, R9
	SHLQ  $2, R9 // bytes from one strip to the next in dst
	CMPQ  AX, $16
	JEQ   strips16
	CMPQ  AX, $32
	JEQ   strips32
	CMPQ  AX, $8
	JEQ   strips8

strips6:
	MOVQ SI, R10
	MOVQ DI, R11
	MOVQ DX, BX

strips6inner:
	VMOVUPS (R10), X0
	VMOVQ   16(R10), X1
	VMOVUPS X0, (R11)
	VMOVQ   X1, 16(R11)
	ADDQ    $24, R10
	ADDQ    R9, R11
	DECQ    BX
	JNZ     strips6inner
	ADDQ    R8, SI
	ADDQ    $24, DI
	DECQ    CX
	JNZ     strips6
	RET

strips8:
	MOVQ SI, R10
	MOVQ DI, R11
	MOVQ DX, BX

strips8inner:
	VMOVUPS (R10), Y0
	VMOVUPS Y0, (R11)
	ADDQ    $32, R10
	ADDQ    R9, R11
	DECQ    BX
	JNZ     strips8inner
	ADDQ    R8, SI
	ADDQ    $32, DI
	DECQ    CX
	JNZ     strips8
	VZEROUPPER
	RET

strips16:
	MOVQ SI, R10
	MOVQ DI, R11
	MOVQ DX, BX

strips16inner:
	VMOVUPS (R10), Y0
	VMOVUPS 32(R10), Y1
	VMOVUPS Y0, (R11)
	VMOVUPS Y1, 32(R11)
	ADDQ    $64, R10
	ADDQ    R9, R11
	DECQ    BX
	JNZ     strips16inner
	ADDQ    R8, SI
	ADDQ    $64, DI
	DECQ    CX
	JNZ     strips16
	VZEROUPPER
	RET

strips32:
	MOVQ SI, R10
	MOVQ DI, R11
	MOVQ DX, BX

strips32inner:
	VMOVUPS (R10), Y0
	VMOVUPS 32(R10), Y1
	VMOVUPS 64(R10), Y2
	VMOVUPS 96(R10), Y3
	VMOVUPS Y0, (R11)
	VMOVUPS Y1, 32(R11)
	VMOVUPS Y2, 64(R11)
	VMOVUPS Y3, 96(R11)
	ADDQ    $128, R10
	ADDQ    R9, R11
	DECQ    BX
	JNZ     strips32inner
	ADDQ    R8, SI
	ADDQ    $128, DI
	DECQ    CX
	JNZ     strips32
	VZEROUPPER
	RET

// TRANSPOSE8 transposes Y0..Y7 (row r = Y r, 8 columns) into Y8..Y15
// (Y(8+l) = column l), using Y0..Y7 as temporaries.
#define TRANSPOSE8 \
	VUNPCKLPS  Y1, Y0, Y8; \
	VUNPCKHPS  Y1, Y0, Y9; \
	VUNPCKLPS  Y3, Y2, Y10; \
	VUNPCKHPS  Y3, Y2, Y11; \
	VUNPCKLPS  Y5, Y4, Y12; \
	VUNPCKHPS  Y5, Y4, Y13; \
	VUNPCKLPS  Y7, Y6, Y14; \
	VUNPCKHPS  Y7, Y6, Y15; \
	VSHUFPS    $0x44, Y10, Y8, Y0; \
	VSHUFPS    $0xEE, Y10, Y8, Y1; \
	VSHUFPS    $0x44, Y11, Y9, Y2; \
	VSHUFPS    $0xEE, Y11, Y9, Y3; \
	VSHUFPS    $0x44, Y14, Y12, Y4; \
	VSHUFPS    $0xEE, Y14, Y12, Y5; \
	VSHUFPS    $0x44, Y15, Y13, Y6; \
	VSHUFPS    $0xEE, Y15, Y13, Y7; \
	VPERM2F128 $0x20, Y4, Y0, Y8; \
	VPERM2F128 $0x20, Y5, Y1, Y9; \
	VPERM2F128 $0x20, Y6, Y2, Y10; \
	VPERM2F128 $0x20, Y7, Y3, Y11; \
	VPERM2F128 $0x31, Y4, Y0, Y12; \
	VPERM2F128 $0x31, Y5, Y1, Y13; \
	VPERM2F128 $0x31, Y6, Y2, Y14; \
	VPERM2F128 $0x31, Y7, Y3, Y15

// func packTrans8AVX(n8 int, src *float32, ld int, dst *float32, ldd int)
// For r < 8 and l < 8*n8: dst[l*ldd + r] = src[r*ld + l].
TEXT ·packTrans8AVX(SB), NOSPLIT, $0-40
	MOVQ n8+0(FP), CX
	MOVQ src+8(FP), SI
	MOVQ ld+16(FP), R8
	SHLQ $2, R8
	MOVQ dst+24(FP), DI
	MOVQ ldd+32(FP), R9
	SHLQ $2, R9
	LEAQ (SI)(R8*2), R10
	ADDQ R8, R10          // src row 3
	LEAQ (R10)(R8*2), R12
	ADDQ R8, R12          // src row 6
	LEAQ (R10)(R8*4), R11 // src row 7
	LEAQ (DI)(R9*2), R13
	ADDQ R9, R13          // dst row 3
	LEAQ (R13)(R9*2), DX
	ADDQ R9, DX           // dst row 6
	LEAQ (R9*8), AX       // 8 dst rows

trans8loop:
	VMOVUPS (SI), Y0
	VMOVUPS (SI)(R8*1), Y1
	VMOVUPS (SI)(R8*2), Y2
	VMOVUPS (R10), Y3
	VMOVUPS (SI)(R8*4), Y4
	VMOVUPS (R10)(R8*2), Y5
	VMOVUPS (R12), Y6
	VMOVUPS (R11), Y7
	TRANSPOSE8
	VMOVUPS Y8, (DI)
	VMOVUPS Y9, (DI)(R9*1)
	VMOVUPS Y10, (DI)(R9*2)
	VMOVUPS Y11, (R13)
	VMOVUPS Y12, (DI)(R9*4)
	VMOVUPS Y13, (R13)(R9*2)
	VMOVUPS Y14, (DX)
	VMOVUPS Y15, (R13)(R9*4)
	ADDQ    $32, SI
	ADDQ    $32, R10
	ADDQ    $32, R11
	ADDQ    $32, R12
	ADDQ    AX, DI
	ADDQ    AX, R13
	ADDQ    AX, DX
	DECQ    CX
	JNZ     trans8loop
	VZEROUPPER
	RET

// STORE6 stores the first 6 floats of Y at off(DI), using X0.
#define STORE6(y, x, off) \
	VMOVUPS      x, off(DI); \
	VEXTRACTF128 $1, y, X0; \
	VMOVQ        X0, (off+16)(DI)

// func packTrans6AVX(n8 int, src *float32, ld int, dst *float32)
// For r < 6 and l < 8*n8: dst[l*6 + r] = src[r*ld + l].
TEXT ·packTrans6AVX(SB), NOSPLIT, $0-32
	MOVQ n8+0(FP), CX
	MOVQ src+8(FP), SI
	MOVQ ld+16(FP), R8
	SHLQ $2, R8
	MOVQ dst+24(FP), DI
	LEAQ (SI)(R8*2), R10
	ADDQ R8, R10 // src row 3

trans6loop:
	VMOVUPS (SI), Y0
	VMOVUPS (SI)(R8*1), Y1
	VMOVUPS (SI)(R8*2), Y2
	VMOVUPS (R10), Y3
	VMOVUPS (SI)(R8*4), Y4
	VMOVUPS (R10)(R8*2), Y5
	VXORPS  Y6, Y6, Y6
	VXORPS  Y7, Y7, Y7
	TRANSPOSE8
	STORE6(Y8, X8, 0)
	STORE6(Y9, X9, 24)
	STORE6(Y10, X10, 48)
	STORE6(Y11, X11, 72)
	STORE6(Y12, X12, 96)
	STORE6(Y13, X13, 120)
	STORE6(Y14, X14, 144)
	STORE6(Y15, X15, 168)
	ADDQ    $32, SI
	ADDQ    $32, R10
	ADDQ    $192, DI
	DECQ    CX
	JNZ     trans6loop
	VZEROUPPER
	RET
