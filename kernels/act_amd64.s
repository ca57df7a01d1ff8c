//go:build amd64 && !purego

#include "textflag.h"
#include "act_amd64.h"

// Sigmoid, Tanh and ExpNegAbs kernels, in place; the formulas are described in
// act.go (and bce.go for the exponential), the constants and the
// SIGMOID / TANH macros in act_amd64.h.

// Register use, all kernels:
//   AX  x   SI  element index   R8  end of the full vectors (n rounded
//   down)   R11 n   R12 actTab

// ---------------------------------------------------------------- AVX-512
// K1: lanes in range (tail).

// LOOP512(fn): fn over n elements, full vectors then the tail
// under K1 (lanes past n are loaded as 0 and not stored).
#define LOOP512(fn) \
	MOVQ  n+0(FP), R11; \
	MOVQ  x+8(FP), AX; \
	MOVQ  c+16(FP), R12; \
	CONST512; \
	XORQ  SI, SI; \
	MOVQ  R11, R8; \
	ANDQ  $~15, R8; \
full:; \
	CMPQ  SI, R8; \
	JGE   tail; \
	VMOVUPS (AX)(SI*4), Z0; \
	fn; \
	VMOVUPS Z4, (AX)(SI*4); \
	ADDQ  $16, SI; \
	JMP   full; \
tail:; \
	CMPQ  SI, R11; \
	JGE   done; \
	MOVQ  R11, CX; \
	SUBQ  SI, CX; \
	MOVL  $1, R9; \
	SHLL  CX, R9; \
	DECL  R9; \
	KMOVW R9, K1; \
	VMOVUPS.Z (AX)(SI*4), K1, Z0; \
	fn; \
	VMOVUPS Z4, K1, (AX)(SI*4); \
done:; \
	VZEROUPPER; \
	RET

// func sigmoidAVX512(n int, x *float32, c *[actTabRows][8]uint32)
TEXT ·sigmoidAVX512(SB), NOSPLIT, $0-24
	LOOP512(SIGMOID512)

// func tanhAVX512(n int, x *float32, c *[actTabRows][8]uint32)
TEXT ·tanhAVX512(SB), NOSPLIT, $0-24
	LOOP512(TANH512)

// func expNegAVX512(n int, x *float32, c *[actTabRows][8]uint32)
TEXT ·expNegAVX512(SB), NOSPLIT, $0-24
	LOOP512(EXPNEG512)

// ------------------------------------------------------------------- AVX2
// Y15 0.0, Y12 lanes in range (tail).

// LOOP256(fn): fn over n elements, full vectors then the tail by
// VMASKMOVPS (lanes past n are neither read nor written).
#define LOOP256(fn) \
	MOVQ   n+0(FP), R11; \
	MOVQ   x+8(FP), AX; \
	MOVQ   c+16(FP), R12; \
	VXORPS Y15, Y15, Y15; \
	XORQ   SI, SI; \
	MOVQ   R11, R8; \
	ANDQ   $~7, R8; \
full:; \
	CMPQ   SI, R8; \
	JGE    tail; \
	VMOVUPS (AX)(SI*4), Y0; \
	fn; \
	VMOVUPS Y4, (AX)(SI*4); \
	ADDQ   $8, SI; \
	JMP    full; \
tail:; \
	CMPQ   SI, R11; \
	JGE    done; \
	MOVQ   R11, CX; \
	SUBQ   SI, CX; \
	MOVQ   CX, X12; \
	VPBROADCASTD X12, Y12; \
	VPCMPGTD T_LANES(R12), Y12, Y12; \
	VMASKMOVPS (AX)(SI*4), Y12, Y0; \
	fn; \
	VMASKMOVPS Y4, Y12, (AX)(SI*4); \
done:; \
	VZEROUPPER; \
	RET

// func sigmoidAVX2(n int, x *float32, c *[actTabRows][8]uint32)
TEXT ·sigmoidAVX2(SB), NOSPLIT, $0-24
	LOOP256(SIGMOID256)

// func tanhAVX2(n int, x *float32, c *[actTabRows][8]uint32)
TEXT ·tanhAVX2(SB), NOSPLIT, $0-24
	LOOP256(TANH256)

// func expNegAVX2(n int, x *float32, c *[actTabRows][8]uint32)
TEXT ·expNegAVX2(SB), NOSPLIT, $0-24
	LOOP256(EXPNEG256)
