#!/usr/bin/python3
"""Fits the polynomials of kernels/bce.go (BCEWithLogits) and measures them.

Method: minimax in relative error by Lawson's algorithm (iteratively
reweighted least squares, numpy.linalg.lstsq) on a dense grid, in float64;
then each coefficient is rounded to float32 in turn, lowest degree first,
and the ones above it are refitted with it fixed (so the rounding of the
large low-order coefficients is compensated by the small high-order ones).
Finally both polynomials are evaluated the way the kernel does (float32
Horner with fused multiply-adds, emulated as float64 then rounded) on a
dense grid and the max relative error against float64 numpy is printed.

  exp(r) ~ 1 + r*(c1 + r*(c2 + ... + r*c6)),  |r| <= ln2/2 (+1% margin:
           n = round(a*log2e) is computed from a rounded product); c1
           comes out as exactly 1.0 in float32, which bce.go relies on
  log1p(e)/e ~ 1 + e*(g1 + e*(g2 + ... + e*g8)),  0 <= e <= 1

Run: /usr/bin/python3 kernels/testdata/bce_fit.py
"""
import numpy as np

f32 = np.float32


def lawson(x, f, fixed, w, pows, iters=400):
    """c minimizing max |w*(fixed + sum c_k x^pows[k] - f)|."""
    A = np.stack([x**k for k in pows], 1) * w[:, None]
    b = (f - fixed) * w
    lam = np.full(len(x), 1 / len(x))
    for _ in range(iters):
        s = np.sqrt(lam)
        c, *_ = np.linalg.lstsq(A * s[:, None], b * s, rcond=None)
        err = np.abs(A @ c - b)
        lam = lam * err
        lam /= lam.sum()
    return c


def fit32(x, f, w, deg):
    """Coefficients 1..deg (c0 = 1) as float32, fitted as described above."""
    fixed = np.ones_like(x)
    out = []
    for j in range(1, deg + 1):
        c = lawson(x, f, fixed, w, range(j, deg + 1))
        cj = f32(c[0])
        out.append(cj)
        fixed = fixed + float(cj) * x**j
    return out


def fma32(a, b, c):
    return (a.astype(np.float64) * b + c).astype(f32)


def horner32(cs, x):
    """1 + x*(c1 + x*(c2 + ...)) in float32 with FMAs, as the kernel."""
    q = np.full_like(x, cs[-1])
    for c in reversed(cs[:-1]):
        q = fma32(q, x, f32(c))
    return fma32(q, x, f32(1))


def main():
    ln2 = np.log(2)
    h = ln2 / 2 * 1.01
    r = np.linspace(-h, h, 40001)
    ce = fit32(r, np.exp(r), np.exp(-r), 6)
    e = np.linspace(0, 1, 40001)
    e[0] = 1e-30
    g = np.log1p(e) / e
    cg = fit32(e, g, 1 / g, 8)

    rng = np.random.default_rng(1)
    r32 = rng.uniform(-h, h, 2_000_000).astype(f32)
    p = horner32(ce, r32)
    err = np.abs(p.astype(np.float64) / np.exp(r32.astype(np.float64)) - 1)
    print(f"exp poly: max rel err {err.max():.3g} = {err.max() / 2**-24:.2f} ulp(2^-24) in float32")
    e32 = np.concatenate([rng.uniform(0, 1, 2_000_000), 2.0 ** rng.uniform(-126, 0, 1_000_000)]).astype(f32)
    # log1p(e) = e + (e*H(e))*e, H = g1 + e*(g2 + ...): the kernel's order
    q = np.full_like(e32, cg[-1])
    for c in reversed(cg[:-1]):
        q = fma32(q, e32, f32(c))
    w = (q.astype(np.float64) * e32).astype(f32)
    lp = fma32(w, e32, e32)
    e64 = e32.astype(np.float64)
    err = np.abs(lp / np.log1p(e64) - 1)
    print(f"log1p(e) = e*G(e): max rel err {err.max():.3g} = {err.max() / 2**-24:.2f} ulp(2^-24) in float32")
    assert ce[0] == 1.0, "exp: c1 is not 1.0"
    ln2hi = f32(float.fromhex("0x1.62e4p-1"))  # ln 2 to 15 significant bits
    print("Go constants (float32 hex):")
    print(f"\tbceLog2e  = {float(f32(1 / ln2)).hex()}")
    print(f"\tbceLn2Hi  = {float(ln2hi).hex()}")
    print(f"\tbceLn2Lo  = {float(f32(ln2 - float(ln2hi))).hex()}")
    for i, c in enumerate(ce[1:], 2):
        print(f"\tbceE{i} = {float(c).hex()} // {c!r}")
    for i, c in enumerate(cg, 1):
        print(f"\tbceG{i} = {float(c).hex()} // {c!r}")


if __name__ == "__main__":
    main()
