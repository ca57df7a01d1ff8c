//go:build amd64 && !purego

#include "textflag.h"

// func adamAVX(p, m, v, g []float32, scale, b1, c1, b2, c2, step, bc2s, eps float32)
// Updates the first len(p) &^ 7 elements, 8 at a time, with the same
// operations in the same order as the Go loop in adam.go (separate
// multiplies and adds, no FMA; VSQRTPS and VDIVPS are correctly rounded),
// so both give bit-identical results.
TEXT ·adamAVX(SB), NOSPLIT, $0-128
	MOVQ p_base+0(FP), DI
	MOVQ p_len+8(FP), CX
	MOVQ m_base+24(FP), SI
	MOVQ v_base+48(FP), DX
	MOVQ g_base+72(FP), BX
	VBROADCASTSS scale+96(FP), Y8
	VBROADCASTSS b1+100(FP), Y9
	VBROADCASTSS c1+104(FP), Y10
	VBROADCASTSS b2+108(FP), Y11
	VBROADCASTSS c2+112(FP), Y12
	VBROADCASTSS step+116(FP), Y13
	VBROADCASTSS bc2s+120(FP), Y14
	VBROADCASTSS eps+124(FP), Y15
	SHRQ $3, CX
	JZ   done

loop:
	VMOVUPS (BX), Y0          // g
	VMULPS  Y8, Y0, Y0        // g = g*scale
	VMOVUPS (SI), Y1          // m
	VMULPS  Y9, Y1, Y1        // b1*m
	VMULPS  Y10, Y0, Y2       // c1*g
	VADDPS  Y2, Y1, Y1        // m = b1*m + c1*g
	VMOVUPS Y1, (SI)
	VMOVUPS (DX), Y3          // v
	VMULPS  Y11, Y3, Y3       // b2*v
	VMULPS  Y12, Y0, Y4       // c2*g
	VMULPS  Y0, Y4, Y4        // (c2*g)*g
	VADDPS  Y4, Y3, Y3        // v = b2*v + c2*g*g
	VMOVUPS Y3, (DX)
	VSQRTPS Y3, Y5            // sqrt(v)
	VDIVPS  Y14, Y5, Y5       // sqrt(v)/bc2s
	VADDPS  Y15, Y5, Y5       // + eps
	VMULPS  Y13, Y1, Y6       // step*m
	VDIVPS  Y5, Y6, Y6        // step*m/denom
	VMOVUPS (DI), Y7
	VSUBPS  Y6, Y7, Y7        // p -= ...
	VMOVUPS Y7, (DI)
	ADDQ $32, DI
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, BX
	DECQ CX
	JNZ  loop

done:
	VZEROUPPER
	RET
