"""Matrix multiplication: the one ``Kind.MATMUL`` row.

``matmul`` follows NumPy/PyTorch semantics (1-D operands, batch
broadcasting). A code generator calls its GEMM kernel for it (the backend's table
names the kernel), then applies any fused elementwise epilogue.
"""
from __future__ import annotations

from .registry import SAVES_OTHERS, Kind, Op, register
from .rules import ShapeError, broadcast, same_dtype


def _matmul_shape(a, b, **_):
    if len(a) == 0 or len(b) == 0:
        raise ShapeError(f"matmul needs tensors of rank >= 1, got shapes {tuple(a)} and {tuple(b)}")
    a2 = (1,) + tuple(a) if len(a) == 1 else tuple(a)
    b2 = tuple(b) + (1,) if len(b) == 1 else tuple(b)
    if a2[-1] != b2[-2]:
        raise ShapeError(f"shapes {tuple(a)} and {tuple(b)} cannot be multiplied "
                         f"({a2[-2]}x{a2[-1]} and {b2[-2]}x{b2[-1]})")
    batch = broadcast(a2[:-2], b2[:-2])
    out = batch + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


def _matmul_grad(g, a, b, needs=(True, True), **_):
    # Lift 1-D operands to matrices so one rule covers every case; the
    # autograd engine sums broadcast batch dimensions away afterwards.
    a2 = a.unsqueeze(0) if a.ndim == 1 else a
    b2 = b.unsqueeze(-1) if b.ndim == 1 else b
    g2 = g
    if a.ndim == 1:
        g2 = g2.unsqueeze(-2)
    if b.ndim == 1:
        g2 = g2.unsqueeze(-1)
    ga = gb = None
    if needs[0]:
        ga = g2.matmul(b2.transpose(-1, -2))
        ga = ga.squeeze(-2) if a.ndim == 1 else ga
    if needs[1]:
        gb = a2.transpose(-1, -2).matmul(g2)
        gb = gb.squeeze(-1) if b.ndim == 1 else gb
    return ga, gb


register(Op("matmul", Kind.MATMUL, 2, lambda xp, a, b: xp.matmul(a, b), _matmul_shape,
            same_dtype, _matmul_grad, "matrix product a @ b (NumPy/PyTorch semantics)",
            saves=SAVES_OTHERS, promote=(0, 1)))
