//go:build amd64 && !purego

#include "textflag.h"

// func finiteAVX(x []float32) bool
// Reports whether the first len(x) &^ 31 values are all finite: v-v is NaN
// exactly when v is a NaN or an infinity, and VCMPPS $3 (unordered) marks
// those lanes; the marks of every block are OR-ed together (no branch per
// block: a non-finite gradient is the rare case).
TEXT ·finiteAVX(SB), NOSPLIT, $0-25
	MOVQ   x_base+0(FP), SI
	MOVQ   x_len+8(FP), CX
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	SHRQ   $5, CX
	JZ     done

loop:
	VMOVUPS (SI), Y0
	VMOVUPS 32(SI), Y1
	VMOVUPS 64(SI), Y2
	VMOVUPS 96(SI), Y3
	VSUBPS  Y0, Y0, Y0
	VSUBPS  Y1, Y1, Y1
	VSUBPS  Y2, Y2, Y2
	VSUBPS  Y3, Y3, Y3
	VCMPPS  $3, Y0, Y0, Y0
	VCMPPS  $3, Y1, Y1, Y1
	VCMPPS  $3, Y2, Y2, Y2
	VCMPPS  $3, Y3, Y3, Y3
	VORPS   Y0, Y6, Y6
	VORPS   Y1, Y7, Y7
	VORPS   Y2, Y6, Y6
	VORPS   Y3, Y7, Y7
	ADDQ    $128, SI
	DECQ    CX
	JNZ     loop

done:
	VORPS     Y6, Y7, Y7
	VMOVMSKPS Y7, AX
	VZEROUPPER
	TESTL     AX, AX
	SETEQ     ret+24(FP)
	RET
