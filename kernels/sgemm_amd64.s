//go:build amd64 && !purego

#include "textflag.h"

// Register use, both kernels:
//   CX  k (steps left)       SI  packed A (mr floats per step)
//   DI  B row l              R8  B row stride in bytes
//   DX  C row 0              R9  C row stride in bytes
//   R10, R11  C rows 3, 5

// One step of k for the 6x16 tile: Y0, Y1 = B[l, 0:16]; Y2/Y3 = A[i, l]
// broadcast; Y4..Y15 accumulate rows 0..5 (two registers a row).
#define STEP6x16(off) \
	VMOVUPS      (DI), Y0; \
	VMOVUPS      32(DI), Y1; \
	VBROADCASTSS (off+0)(SI), Y2; \
	VFMADD231PS  Y0, Y2, Y4; \
	VFMADD231PS  Y1, Y2, Y5; \
	VBROADCASTSS (off+4)(SI), Y3; \
	VFMADD231PS  Y0, Y3, Y6; \
	VFMADD231PS  Y1, Y3, Y7; \
	VBROADCASTSS (off+8)(SI), Y2; \
	VFMADD231PS  Y0, Y2, Y8; \
	VFMADD231PS  Y1, Y2, Y9; \
	VBROADCASTSS (off+12)(SI), Y3; \
	VFMADD231PS  Y0, Y3, Y10; \
	VFMADD231PS  Y1, Y3, Y11; \
	VBROADCASTSS (off+16)(SI), Y2; \
	VFMADD231PS  Y0, Y2, Y12; \
	VFMADD231PS  Y1, Y2, Y13; \
	VBROADCASTSS (off+20)(SI), Y3; \
	VFMADD231PS  Y0, Y3, Y14; \
	VFMADD231PS  Y1, Y3, Y15; \
	ADDQ         R8, DI

// One step of k for the top 4 rows of the tile (Y4..Y11).
#define STEP4x16(off) \
	VMOVUPS      (DI), Y0; \
	VMOVUPS      32(DI), Y1; \
	VBROADCASTSS (off+0)(SI), Y2; \
	VFMADD231PS  Y0, Y2, Y4; \
	VFMADD231PS  Y1, Y2, Y5; \
	VBROADCASTSS (off+4)(SI), Y3; \
	VFMADD231PS  Y0, Y3, Y6; \
	VFMADD231PS  Y1, Y3, Y7; \
	VBROADCASTSS (off+8)(SI), Y2; \
	VFMADD231PS  Y0, Y2, Y8; \
	VFMADD231PS  Y1, Y2, Y9; \
	VBROADCASTSS (off+12)(SI), Y3; \
	VFMADD231PS  Y0, Y3, Y10; \
	VFMADD231PS  Y1, Y3, Y11; \
	ADDQ         R8, DI

// C row = alpha*acc (Y0 = alpha).
#define STORE0_AVX2(acc0, acc1, row, rowhi) \
	VMULPS  Y0, acc0, acc0; \
	VMULPS  Y0, acc1, acc1; \
	VMOVUPS acc0, row; \
	VMOVUPS acc1, rowhi

// C row = round(alpha*acc) + round(beta*C) (Y0 = alpha, Y1 = beta).
#define STOREB_AVX2(acc0, acc1, row, rowhi) \
	VMULPS  Y0, acc0, acc0; \
	VMULPS  Y0, acc1, acc1; \
	VMULPS  row, Y1, Y2; \
	VMULPS  rowhi, Y1, Y3; \
	VADDPS  Y2, acc0, acc0; \
	VADDPS  Y3, acc1, acc1; \
	VMOVUPS acc0, row; \
	VMOVUPS acc1, rowhi

// func sgemmKernel6x16AVX2(k int, a, b *float32, ldb int, c *float32, ldc int, rows int, alpha, beta float32)
// Stores rows (1..6) rows of C; with rows <= 4 only 4 rows are computed.
TEXT ·sgemmKernel6x16AVX2(SB), NOSPLIT, $0-64
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ ldb+24(FP), R8
	SHLQ $2, R8
	MOVQ c+32(FP), DX
	MOVQ ldc+40(FP), R9
	SHLQ $2, R9
	MOVQ rows+48(FP), AX
	LEAQ (DX)(R9*2), R10
	ADDQ R9, R10         // row 3
	LEAQ (R10)(R9*2), R11 // row 5

	PREFETCHT0 (DX)
	PREFETCHT0 (DX)(R9*1)
	PREFETCHT0 (DX)(R9*2)
	PREFETCHT0 (R10)
	PREFETCHT0 (DX)(R9*4)
	PREFETCHT0 (R11)
	// The same rows of the next strip (16 columns on), whose tile is
	// computed a whole column of tiles later.
	PREFETCHT0 64(DX)
	PREFETCHT0 64(DX)(R9*1)
	PREFETCHT0 64(DX)(R9*2)
	PREFETCHT0 64(R10)
	PREFETCHT0 64(DX)(R9*4)
	PREFETCHT0 64(R11)

	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	VXORPS Y12, Y12, Y12
	VXORPS Y13, Y13, Y13
	VXORPS Y14, Y14, Y14
	VXORPS Y15, Y15, Y15

	MOVQ CX, BX
	SHRQ $2, BX
	CMPQ AX, $4
	JLE  avx2four
	TESTQ BX, BX
	JZ   avx2tail

avx2loop4:
	STEP6x16(0)
	STEP6x16(24)
	STEP6x16(48)
	STEP6x16(72)
	ADDQ $96, SI
	DECQ BX
	JNZ  avx2loop4

avx2tail:
	ANDQ $3, CX
	JZ   avx2store

avx2loop1:
	STEP6x16(0)
	ADDQ $24, SI
	DECQ CX
	JNZ  avx2loop1
	JMP  avx2store

	// rows <= 4: the same steps on the top 4 rows only.
avx2four:
	TESTQ BX, BX
	JZ    avx2fourtail

avx2fourloop4:
	STEP4x16(0)
	STEP4x16(24)
	STEP4x16(48)
	STEP4x16(72)
	ADDQ $96, SI
	DECQ BX
	JNZ  avx2fourloop4

avx2fourtail:
	ANDQ $3, CX
	JZ   avx2store

avx2fourloop1:
	STEP4x16(0)
	ADDQ $24, SI
	DECQ CX
	JNZ  avx2fourloop1

avx2store:
	VBROADCASTSS alpha+56(FP), Y0
	VMOVSS       beta+60(FP), X1
	VXORPS       X2, X2, X2
	VUCOMISS     X2, X1
	JNE          avx2beta
	JPS          avx2beta

	STORE0_AVX2(Y4, Y5, (DX), 32(DX))
	CMPQ AX, $1
	JEQ  avx2done
	STORE0_AVX2(Y6, Y7, (DX)(R9*1), 32(DX)(R9*1))
	CMPQ AX, $2
	JEQ  avx2done
	STORE0_AVX2(Y8, Y9, (DX)(R9*2), 32(DX)(R9*2))
	CMPQ AX, $3
	JEQ  avx2done
	STORE0_AVX2(Y10, Y11, (R10), 32(R10))
	CMPQ AX, $4
	JEQ  avx2done
	STORE0_AVX2(Y12, Y13, (DX)(R9*4), 32(DX)(R9*4))
	CMPQ AX, $5
	JEQ  avx2done
	STORE0_AVX2(Y14, Y15, (R11), 32(R11))
	JMP  avx2done

avx2beta:
	VBROADCASTSS beta+60(FP), Y1
	STOREB_AVX2(Y4, Y5, (DX), 32(DX))
	CMPQ AX, $1
	JEQ  avx2done
	STOREB_AVX2(Y6, Y7, (DX)(R9*1), 32(DX)(R9*1))
	CMPQ AX, $2
	JEQ  avx2done
	STOREB_AVX2(Y8, Y9, (DX)(R9*2), 32(DX)(R9*2))
	CMPQ AX, $3
	JEQ  avx2done
	STOREB_AVX2(Y10, Y11, (R10), 32(R10))
	CMPQ AX, $4
	JEQ  avx2done
	STOREB_AVX2(Y12, Y13, (DX)(R9*4), 32(DX)(R9*4))
	CMPQ AX, $5
	JEQ  avx2done
	STOREB_AVX2(Y14, Y15, (R11), 32(R11))
avx2done:
	VZEROUPPER
	RET

// One step of k for the 8x32 tile: Z0, Z1 = B[l, 0:32]; Z2/Z3 = A[i, l]
// broadcast; Z16..Z31 accumulate rows 0..7 (two registers a row).
#define STEP8x32(off) \
	VMOVUPS      (DI), Z0; \
	VMOVUPS      64(DI), Z1; \
	VBROADCASTSS (off+0)(SI), Z2; \
	VFMADD231PS  Z0, Z2, Z16; \
	VFMADD231PS  Z1, Z2, Z17; \
	VBROADCASTSS (off+4)(SI), Z3; \
	VFMADD231PS  Z0, Z3, Z18; \
	VFMADD231PS  Z1, Z3, Z19; \
	VBROADCASTSS (off+8)(SI), Z2; \
	VFMADD231PS  Z0, Z2, Z20; \
	VFMADD231PS  Z1, Z2, Z21; \
	VBROADCASTSS (off+12)(SI), Z3; \
	VFMADD231PS  Z0, Z3, Z22; \
	VFMADD231PS  Z1, Z3, Z23; \
	VBROADCASTSS (off+16)(SI), Z2; \
	VFMADD231PS  Z0, Z2, Z24; \
	VFMADD231PS  Z1, Z2, Z25; \
	VBROADCASTSS (off+20)(SI), Z3; \
	VFMADD231PS  Z0, Z3, Z26; \
	VFMADD231PS  Z1, Z3, Z27; \
	VBROADCASTSS (off+24)(SI), Z2; \
	VFMADD231PS  Z0, Z2, Z28; \
	VFMADD231PS  Z1, Z2, Z29; \
	VBROADCASTSS (off+28)(SI), Z3; \
	VFMADD231PS  Z0, Z3, Z30; \
	VFMADD231PS  Z1, Z3, Z31; \
	ADDQ         R8, DI

#define STORE0_AVX512(acc0, acc1, row, rowhi) \
	VMULPS  Z0, acc0, acc0; \
	VMULPS  Z0, acc1, acc1; \
	VMOVUPS acc0, row; \
	VMOVUPS acc1, rowhi

#define STOREB_AVX512(acc0, acc1, row, rowhi) \
	VMULPS  Z0, acc0, acc0; \
	VMULPS  Z0, acc1, acc1; \
	VMULPS  row, Z1, Z2; \
	VMULPS  rowhi, Z1, Z3; \
	VADDPS  Z2, acc0, acc0; \
	VADDPS  Z3, acc1, acc1; \
	VMOVUPS acc0, row; \
	VMOVUPS acc1, rowhi

// func sgemmKernel8x32AVX512(k int, a, b *float32, ldb int, c *float32, ldc int, rows int, alpha, beta float32)
// Stores rows (1..8) rows of C.
TEXT ·sgemmKernel8x32AVX512(SB), NOSPLIT, $0-64
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ ldb+24(FP), R8
	SHLQ $2, R8
	MOVQ c+32(FP), DX
	MOVQ ldc+40(FP), R9
	SHLQ $2, R9
	MOVQ rows+48(FP), AX
	LEAQ (DX)(R9*2), R10
	ADDQ R9, R10          // row 3
	LEAQ (R10)(R9*2), R11 // row 5; row 6 = R11+R9, row 7 = R10+4*R9

	PREFETCHT0 (DX)
	PREFETCHT0 (DX)(R9*1)
	PREFETCHT0 (DX)(R9*2)
	PREFETCHT0 (R10)
	PREFETCHT0 (DX)(R9*4)
	PREFETCHT0 (R11)
	PREFETCHT0 (R11)(R9*1)
	PREFETCHT0 (R10)(R9*4)
	// The same rows of the next strip (32 columns on).
	PREFETCHT0 128(DX)
	PREFETCHT0 128(DX)(R9*1)
	PREFETCHT0 128(DX)(R9*2)
	PREFETCHT0 128(R10)
	PREFETCHT0 128(DX)(R9*4)
	PREFETCHT0 128(R11)
	PREFETCHT0 128(R11)(R9*1)
	PREFETCHT0 128(R10)(R9*4)

	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	VPXORD Z18, Z18, Z18
	VPXORD Z19, Z19, Z19
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23
	VPXORD Z24, Z24, Z24
	VPXORD Z25, Z25, Z25
	VPXORD Z26, Z26, Z26
	VPXORD Z27, Z27, Z27
	VPXORD Z28, Z28, Z28
	VPXORD Z29, Z29, Z29
	VPXORD Z30, Z30, Z30
	VPXORD Z31, Z31, Z31

	MOVQ CX, BX
	SHRQ $2, BX
	JZ   avx512tail

avx512loop4:
	STEP8x32(0)
	STEP8x32(32)
	STEP8x32(64)
	STEP8x32(96)
	ADDQ $128, SI
	DECQ BX
	JNZ  avx512loop4

avx512tail:
	ANDQ $3, CX
	JZ   avx512store

avx512loop1:
	STEP8x32(0)
	ADDQ $32, SI
	DECQ CX
	JNZ  avx512loop1

avx512store:
	VBROADCASTSS alpha+56(FP), Z0
	VMOVSS       beta+60(FP), X1
	VXORPS       X2, X2, X2
	VUCOMISS     X2, X1
	JNE          avx512beta
	JPS          avx512beta

	STORE0_AVX512(Z16, Z17, (DX), 64(DX))
	CMPQ AX, $1
	JEQ  avx512done
	STORE0_AVX512(Z18, Z19, (DX)(R9*1), 64(DX)(R9*1))
	CMPQ AX, $2
	JEQ  avx512done
	STORE0_AVX512(Z20, Z21, (DX)(R9*2), 64(DX)(R9*2))
	CMPQ AX, $3
	JEQ  avx512done
	STORE0_AVX512(Z22, Z23, (R10), 64(R10))
	CMPQ AX, $4
	JEQ  avx512done
	STORE0_AVX512(Z24, Z25, (DX)(R9*4), 64(DX)(R9*4))
	CMPQ AX, $5
	JEQ  avx512done
	STORE0_AVX512(Z26, Z27, (R11), 64(R11))
	CMPQ AX, $6
	JEQ  avx512done
	STORE0_AVX512(Z28, Z29, (R11)(R9*1), 64(R11)(R9*1))
	CMPQ AX, $7
	JEQ  avx512done
	STORE0_AVX512(Z30, Z31, (R10)(R9*4), 64(R10)(R9*4))
	JMP  avx512done

avx512beta:
	VBROADCASTSS beta+60(FP), Z1
	STOREB_AVX512(Z16, Z17, (DX), 64(DX))
	CMPQ AX, $1
	JEQ  avx512done
	STOREB_AVX512(Z18, Z19, (DX)(R9*1), 64(DX)(R9*1))
	CMPQ AX, $2
	JEQ  avx512done
	STOREB_AVX512(Z20, Z21, (DX)(R9*2), 64(DX)(R9*2))
	CMPQ AX, $3
	JEQ  avx512done
	STOREB_AVX512(Z22, Z23, (R10), 64(R10))
	CMPQ AX, $4
	JEQ  avx512done
	STOREB_AVX512(Z24, Z25, (DX)(R9*4), 64(DX)(R9*4))
	CMPQ AX, $5
	JEQ  avx512done
	STOREB_AVX512(Z26, Z27, (R11), 64(R11))
	CMPQ AX, $6
	JEQ  avx512done
	STOREB_AVX512(Z28, Z29, (R11)(R9*1), 64(R11)(R9*1))
	CMPQ AX, $7
	JEQ  avx512done
	STOREB_AVX512(Z30, Z31, (R10)(R9*4), 64(R10)(R9*4))
avx512done:
	VZEROUPPER
	RET
