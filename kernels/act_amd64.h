// Constants and macros of the Sigmoid, Tanh and ExpNegAbs kernels (act_amd64.s),
// shared with the LSTM cell kernels (lstm_amd64.s). The formulas are
// described in act.go (and bce.go for the exponential).

// Constants come from actTab (a 32-byte vector a row), at these offsets
// from R12:
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
#define T_CUTOFF 352
#define T_BIAS   384 // int32 127
#define T_CLAMP  416 // tanh's bound on |x|
#define T_TWO    448
#define T_SIGN   480 // 0x80000000
#define T_LANES  512 // int32 0..7

// AVX-512: CONST512 loads the constants into registers:
// Z31 |.| mask, Z30 -log2e, Z29 magic, Z28 ln2hi, Z27 ln2lo, Z26..Z22
// e6..e2, Z21 1.0, Z20 cutoff, Z19 127, Z18 0.0, Z17 clamp, Z16 2.0,
// Z15 sign mask.

#define CONST512 \
	VPBROADCASTD T_ABS(R12), Z31; \
	VBROADCASTSS T_NLOG2E(R12), Z30; \
	VBROADCASTSS T_MAGIC(R12), Z29; \
	VBROADCASTSS T_LN2HI(R12), Z28; \
	VBROADCASTSS T_LN2LO(R12), Z27; \
	VBROADCASTSS T_E6(R12), Z26; \
	VBROADCASTSS T_E5(R12), Z25; \
	VBROADCASTSS T_E4(R12), Z24; \
	VBROADCASTSS T_E3(R12), Z23; \
	VBROADCASTSS T_E2(R12), Z22; \
	VBROADCASTSS T_ONE(R12), Z21; \
	VBROADCASTSS T_CUTOFF(R12), Z20; \
	VPBROADCASTD T_BIAS(R12), Z19; \
	VPXORD       Z18, Z18, Z18; \
	VBROADCASTSS T_CLAMP(R12), Z17; \
	VBROADCASTSS T_TWO(R12), Z16; \
	VPBROADCASTD T_SIGN(R12), Z15

// EXPRED512: the exponential's range reduction and polynomial for
// a = Z2 >= 0 (bce.go): exp(-a) = Z3 * (1 + Z5*Z6), with Z3 = 2^n,
// Z5 = r and Z6 = t(r). Clobbers Z4.
#define EXPRED512 \
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
	VPADDD       Z19, Z3, Z3; \
	VPSLLD       $23, Z3, Z3

// EXPNEG512: Z4 = exp(-|Z0|), 0 where |Z0| > cutoff (NaN stays NaN).
// Clobbers Z2, Z3, Z5, Z6, K2.
#define EXPNEG512 \
	VPANDD       Z31, Z0, Z2; \
	EXPRED512; \
	VFMADD213PS  Z21, Z5, Z6; \
	VCMPPS       $0x1a, Z20, Z2, K2; \
	VMULPS.Z     Z3, Z6, K2, Z4

// SIGMOID512: Z4 = sigmoid(Z0): e = exp(-|x|), s = 1/(1+e), then s for
// x >= 0, e*s otherwise. Clobbers Z2, Z3, Z5, Z6, K2, K3.
#define SIGMOID512 \
	EXPNEG512; \
	VADDPS       Z21, Z4, Z3; \
	VDIVPS       Z3, Z21, Z3; \
	VMULPS       Z3, Z4, Z4; \
	VCMPPS       $0x1d, Z18, Z0, K3; \
	VMOVAPS      Z3, K3, Z4

// TANH512: Z4 = tanh(Z0). Clobbers Z2, Z3, Z5, Z6.
#define TANH512 \
	VPANDD       Z31, Z0, Z2; \
	VMINPS       Z2, Z17, Z2; \
	VADDPS       Z2, Z2, Z2; \
	EXPRED512; \
	VMULPS       Z5, Z6, Z6; \
	VSUBPS       Z21, Z3, Z4; \
	VFMADD213PS  Z4, Z3, Z6; \
	VADDPS       Z16, Z6, Z3; \
	VDIVPS       Z3, Z6, Z6; \
	VPANDD       Z31, Z6, Z6; \
	VPANDD       Z15, Z0, Z4; \
	VPORD        Z6, Z4, Z4

// AVX2: the constants are memory operands (R12); the sigmoid needs Y15 =
// 0.0.

// EXPRED256: EXPRED512 in ymm registers: exp(-Y2) = Y3 * (1 + Y5*Y6).
// Clobbers Y4.
#define EXPRED256 \
	VMOVUPS      T_MAGIC(R12), Y3; \
	VFMADD231PS  T_NLOG2E(R12), Y2, Y3; \
	VSUBPS       T_MAGIC(R12), Y3, Y4; \
	VMOVAPS      Y2, Y5; \
	VFNMSUB231PS T_LN2HI(R12), Y4, Y5; \
	VFNMADD231PS T_LN2LO(R12), Y4, Y5; \
	VMOVUPS      T_E6(R12), Y6; \
	VFMADD213PS  T_E5(R12), Y5, Y6; \
	VFMADD213PS  T_E4(R12), Y5, Y6; \
	VFMADD213PS  T_E3(R12), Y5, Y6; \
	VFMADD213PS  T_E2(R12), Y5, Y6; \
	VFMADD213PS  T_ONE(R12), Y5, Y6; \
	VPADDD       T_BIAS(R12), Y3, Y3; \
	VPSLLD       $23, Y3, Y3

// EXPNEG256: Y4 = exp(-|Y0|), 0 where |Y0| > cutoff (NaN stays NaN).
// Clobbers Y2, Y3, Y5, Y6.
#define EXPNEG256 \
	VANDPS       T_ABS(R12), Y0, Y2; \
	EXPRED256; \
	VFMADD213PS  T_ONE(R12), Y5, Y6; \
	VMULPS       Y3, Y6, Y6; \
	VCMPPS       $0x1e, T_CUTOFF(R12), Y2, Y4; \
	VANDNPS      Y6, Y4, Y4

// SIGMOID256: Y4 = sigmoid(Y0), as SIGMOID512 (Y15 = 0.0). Clobbers Y2,
// Y3, Y5, Y6.
#define SIGMOID256 \
	EXPNEG256; \
	VADDPS       T_ONE(R12), Y4, Y3; \
	VMOVUPS      T_ONE(R12), Y6; \
	VDIVPS       Y3, Y6, Y3; \
	VMULPS       Y3, Y4, Y4; \
	VCMPPS       $0x1d, Y15, Y0, Y5; \
	VBLENDVPS    Y5, Y3, Y4, Y4

// TANH256: Y4 = tanh(Y0). Clobbers Y2, Y3, Y5..Y7.
#define TANH256 \
	VANDPS       T_ABS(R12), Y0, Y2; \
	VMOVUPS      T_CLAMP(R12), Y7; \
	VMINPS       Y2, Y7, Y2; \
	VADDPS       Y2, Y2, Y2; \
	EXPRED256; \
	VMULPS       Y5, Y6, Y6; \
	VSUBPS       T_ONE(R12), Y3, Y4; \
	VFMADD213PS  Y4, Y3, Y6; \
	VADDPS       T_TWO(R12), Y6, Y3; \
	VDIVPS       Y3, Y6, Y6; \
	VANDPS       T_ABS(R12), Y6, Y6; \
	VANDPS       T_SIGN(R12), Y0, Y4; \
	VORPS        Y6, Y4, Y4

