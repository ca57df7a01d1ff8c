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

// Implicit im2col (im2col.go). Masks come from one bit per position and
// tap; the loads are masked, so invalid lanes are zero and never read.

// 1 << i for i < 16: lane i of a ymm pair tests bit i of a broadcast mask.
DATA im2colBits<>+0(SB)/4, $0x1
DATA im2colBits<>+4(SB)/4, $0x2
DATA im2colBits<>+8(SB)/4, $0x4
DATA im2colBits<>+12(SB)/4, $0x8
DATA im2colBits<>+16(SB)/4, $0x10
DATA im2colBits<>+20(SB)/4, $0x20
DATA im2colBits<>+24(SB)/4, $0x40
DATA im2colBits<>+28(SB)/4, $0x80
DATA im2colBits<>+32(SB)/4, $0x100
DATA im2colBits<>+36(SB)/4, $0x200
DATA im2colBits<>+40(SB)/4, $0x400
DATA im2colBits<>+44(SB)/4, $0x800
DATA im2colBits<>+48(SB)/4, $0x1000
DATA im2colBits<>+52(SB)/4, $0x2000
DATA im2colBits<>+56(SB)/4, $0x4000
DATA im2colBits<>+60(SB)/4, $0x8000
GLOBL im2colBits<>(SB), RODATA|NOPTR, $64

// func packIm2colAVX512(kc int, src *float32, ld int, offs *int, taps, t0 int, bits *byte, bstride int, dst *float32, strips int)
// Row l of the kc rows is tap t (DX, from t0, wrapping at taps) of the
// channel whose plane starts at SI (src, advanced by ld each wrap): its
// run starts offs[t] floats from SI, its mask bits at bits + t*bstride.
// For each strip: two 16-bit masks, two zeroing masked loads, two stores.
TEXT ·packIm2colAVX512(SB), NOSPLIT, $0-80
	MOVQ kc+0(FP), CX
	MOVQ src+8(FP), SI
	MOVQ ld+16(FP), R8
	SHLQ $2, R8
	MOVQ t0+40(FP), DX
	MOVQ dst+64(FP), DI
	MOVQ CX, R11
	SHLQ $7, R11 // bytes from one strip to the next in dst: kc*32*4

im512row:
	MOVQ  offs+24(FP), R10
	MOVQ  (R10)(DX*8), R10
	LEAQ  (SI)(R10*4), R10 // the row's run
	MOVQ  DX, AX
	IMULQ bstride+56(FP), AX
	ADDQ  bits+48(FP), AX  // its mask bits
	MOVQ  DI, R12
	MOVQ  strips+72(FP), BX

im512strip:
	KMOVW     (AX), K1
	KMOVW     2(AX), K2
	VMOVUPS.Z (R10), K1, Z0
	VMOVUPS.Z 64(R10), K2, Z1
	VMOVUPS   Z0, (R12)
	VMOVUPS   Z1, 64(R12)
	ADDQ      $128, R10
	ADDQ      $4, AX
	ADDQ      R11, R12
	DECQ      BX
	JNZ       im512strip

	ADDQ $128, DI
	INCQ DX
	CMPQ DX, taps+32(FP)
	JLT  im512next
	XORQ DX, DX
	ADDQ R8, SI

im512next:
	DECQ CX
	JNZ  im512row
	VZEROUPPER
	RET

// func packIm2colAVX2(kc int, src *float32, ld int, offs *int, taps, t0 int, bits *byte, bstride int, dst *float32, strips int)
// As packIm2colAVX512 with strips of 16: the 16 mask bits are broadcast
// and turned into two lane masks (AND with 1<<i, compare equal) for
// VMASKMOVPS.
TEXT ·packIm2colAVX2(SB), NOSPLIT, $0-80
	MOVQ    kc+0(FP), CX
	MOVQ    src+8(FP), SI
	MOVQ    ld+16(FP), R8
	SHLQ    $2, R8
	MOVQ    t0+40(FP), DX
	MOVQ    dst+64(FP), DI
	MOVQ    CX, R11
	SHLQ    $6, R11 // kc*16*4
	VMOVDQU im2colBits<>+0(SB), Y14
	VMOVDQU im2colBits<>+32(SB), Y15

im2row:
	MOVQ  offs+24(FP), R10
	MOVQ  (R10)(DX*8), R10
	LEAQ  (SI)(R10*4), R10
	MOVQ  DX, AX
	IMULQ bstride+56(FP), AX
	ADDQ  bits+48(FP), AX
	MOVQ  DI, R12
	MOVQ  strips+72(FP), BX

im2strip:
	VPBROADCASTD (AX), Y2
	VPAND        Y14, Y2, Y3
	VPCMPEQD     Y14, Y3, Y3
	VPAND        Y15, Y2, Y4
	VPCMPEQD     Y15, Y4, Y4
	VMASKMOVPS   (R10), Y3, Y0
	VMASKMOVPS   32(R10), Y4, Y1
	VMOVUPS      Y0, (R12)
	VMOVUPS      Y1, 32(R12)
	ADDQ         $64, R10
	ADDQ         $2, AX
	ADDQ         R11, R12
	DECQ         BX
	JNZ          im2strip

	ADDQ $64, DI
	INCQ DX
	CMPQ DX, taps+32(FP)
	JLT  im2next
	XORQ DX, DX
	ADDQ R8, SI

im2next:
	DECQ CX
	JNZ  im2row
	VZEROUPPER
	RET

// LOADROWT(i, y) loads y = the 8 positions of row i of the block (byte
// offset BX in the run src + soff[i]*4), masked by the 8 bits from bit
// shift of the block's byte (DX) of bits + boff[i]; Y14 = 1 << (shift+lane).
#define LOADROWT(i, y) \
	MOVQ         (i*8)(R8), R12; \
	LEAQ         (SI)(R12*4), R12; \
	MOVQ         (i*8)(R10), R13; \
	ADDQ         R9, R13; \
	VPBROADCASTD (R13)(DX*1), y; \
	VPAND        Y14, y, y; \
	VPCMPEQD     Y14, y, y; \
	VMASKMOVPS   (R12)(BX*1), y, y

// func packIm2colTAVX(n8 int, src *float32, soff *[8]int, bits *byte, boff *[8]int, shift int, dst *float32, ldd int)
// For r < 8 and l < 8*n8: dst[l*ldd + r] = src[soff[r] + l] where bit
// shift+l of bits[boff[r]:] is set, else 0. Blocks of 8x8: eight masked
// row loads, the transpose of packTrans8AVX, eight stores.
TEXT ·packIm2colTAVX(SB), NOSPLIT, $0-64
	MOVQ n8+0(FP), CX
	MOVQ src+8(FP), SI
	MOVQ soff+16(FP), R8
	MOVQ bits+24(FP), R9
	MOVQ boff+32(FP), R10
	MOVQ dst+48(FP), DI
	MOVQ ldd+56(FP), R11
	SHLQ $2, R11
	XORQ BX, BX          // byte offset of the block in the runs
	XORQ DX, DX          // byte offset of the block in the bits

imtloop:
	// TRANSPOSE8 uses all 16 registers: rebuild the lane bits each block.
	MOVQ    shift+40(FP), AX
	VMOVQ   AX, X13
	VMOVDQU im2colBits<>+0(SB), Y14
	VPSLLD  X13, Y14, Y14
	LOADROWT(0, Y0)
	LOADROWT(1, Y1)
	LOADROWT(2, Y2)
	LOADROWT(3, Y3)
	LOADROWT(4, Y4)
	LOADROWT(5, Y5)
	LOADROWT(6, Y6)
	LOADROWT(7, Y7)
	TRANSPOSE8
	LEAQ    (DI)(R11*2), R12
	ADDQ    R11, R12             // dst row 3
	LEAQ    (DI)(R11*4), R13     // dst row 4
	VMOVUPS Y8, (DI)
	VMOVUPS Y9, (DI)(R11*1)
	VMOVUPS Y10, (DI)(R11*2)
	VMOVUPS Y11, (R12)
	VMOVUPS Y12, (R13)
	VMOVUPS Y13, (R12)(R11*2)
	VMOVUPS Y14, (R13)(R11*2)
	VMOVUPS Y15, (R12)(R11*4)
	ADDQ    $32, BX
	INCQ    DX
	LEAQ    (DI)(R11*8), DI
	DECQ    CX
	JNZ     imtloop
	VZEROUPPER
	RET

// LOADROWT512(i, y) is LOADROWT with an AVX-512 k-mask: the 16 bits from
// the block's byte of row i's bits, shifted right by CL, are the lane mask
// of a zeroing masked load of the 8 positions at SI + soff[i]*4.
#define LOADROWT512(i, y) \
	MOVQ      (i*8)(R8), R12; \
	MOVQ      (i*8)(R10), R13; \
	ADDQ      R9, R13; \
	MOVWLZX   (R13)(DX*1), AX; \
	SHRL      CL, AX; \
	KMOVW     AX, K1; \
	VMOVUPS.Z (SI)(R12*4), K1, y

// func packIm2colTAVX512(n8 int, src *float32, soff *[8]int, bits *byte, boff *[8]int, shift int, dst *float32, ldd int)
// packIm2colTAVX with k-masks (AVX-512F and VL): no lane-bit vector to
// rebuild, no mask arithmetic in vector registers.
TEXT ·packIm2colTAVX512(SB), NOSPLIT, $0-64
	MOVQ n8+0(FP), BX
	MOVQ src+8(FP), SI
	MOVQ soff+16(FP), R8
	MOVQ bits+24(FP), R9
	MOVQ boff+32(FP), R10
	MOVQ shift+40(FP), CX
	MOVQ dst+48(FP), DI
	MOVQ ldd+56(FP), R11
	SHLQ $2, R11
	XORQ DX, DX          // byte offset of the block in the bits

imt512loop:
	LOADROWT512(0, Y0)
	LOADROWT512(1, Y1)
	LOADROWT512(2, Y2)
	LOADROWT512(3, Y3)
	LOADROWT512(4, Y4)
	LOADROWT512(5, Y5)
	LOADROWT512(6, Y6)
	LOADROWT512(7, Y7)
	TRANSPOSE8
	LEAQ    (DI)(R11*2), R12
	ADDQ    R11, R12             // dst row 3
	LEAQ    (DI)(R11*4), R13     // dst row 4
	VMOVUPS Y8, (DI)
	VMOVUPS Y9, (DI)(R11*1)
	VMOVUPS Y10, (DI)(R11*2)
	VMOVUPS Y11, (R12)
	VMOVUPS Y12, (R13)
	VMOVUPS Y13, (R12)(R11*2)
	VMOVUPS Y14, (R13)(R11*2)
	VMOVUPS Y15, (R12)(R11*4)
	ADDQ    $32, SI
	INCQ    DX
	LEAQ    (DI)(R11*8), DI
	DECQ    BX
	JNZ     imt512loop
	VZEROUPPER
	RET
