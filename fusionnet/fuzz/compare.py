"""Comparing two results: tensors (values, dtype, shape, autograd flags), output
structures and raised exceptions.

Tolerances: integers and bools must be equal; floats must have NaN in the same
positions and infinities of the same sign in the same positions, and elsewhere
``|fused - eager| <= rtol * (|eager| + scale)`` where ``scale`` is the largest finite
``|eager|`` of the tensor (so the tolerance follows the tensor's magnitude, which is
where reassociated float32 sums put their error) and ``rtol`` is ``1e-4`` for float32,
``1e-10`` for float64 (a case that computes anything in float32 compares its float64
results with float32's ``rtol``). Gradients also scale by the largest gradient of the
same backward. ``0.0`` and ``-0.0`` compare equal.

Rounding flips: a case that turns floats into discrete values (``.int()``, comparisons,
``floor``, ``argmax``...: :func:`case_flips`) may see a last-bit difference between two
correct float32 implementations (NumPy's SIMD ``tanh`` and generated code's correctly
rounded one) flip an integer or a bool. Up to 2 elements, or 1 in 500, of such a
tensor may differ; the comparison then returns a text starting with :data:`ROUNDING`,
which the runner records as a note, not as a mismatch.
"""
from __future__ import annotations

import re

import numpy as np

__all__ = ["RTOL", "ROUNDING", "case_rtol", "case_flips", "compare_arrays", "compare_tensors", "compare_outputs", "same_kind",
           "flatten", "describe_exception"]

RTOL = {"float32": 1e-4, "float64": 1e-10}
#: How a tolerated rounding flip's description starts.
ROUNDING = "rounding flip"
_DISCRETE = re.compile(r"\.(int|long|bool|floor|ceil|round|trunc|argmax|argmin|sign)\(|"
                       r"torch\.(int|int32|int64|long|bool)\b|[<>]=?|==|!=|\.(gt|lt|ge|le|eq|"
                       r"ne)\(|\.(max|min)\(.*\)\.indices|\)\[1\]")


def case_rtol(module) -> float | None:
    """The ``rtol`` for all of a case's floats: float32's when the case computes anything
    in float32 (its ``LOWEST_FLOAT``), else None (each tensor's own dtype decides)."""
    return RTOL.get(getattr(module, "LOWEST_FLOAT", None))


def case_flips(source: str) -> bool:
    """Whether a case's source turns floats into discrete values somewhere (so a
    last-bit float difference may flip an integer or a bool: see the module docstring)."""
    return bool(_DISCRETE.search(source))


def compare_arrays(e: np.ndarray, f: np.ndarray, dtype=None, rtol: float | None = None,
                   reference: float = 0.0, flips: bool = False) -> str:
    """'' if ``f`` matches ``e`` within the tolerance, else what differs.

    ``rtol`` defaults to :data:`RTOL` of ``dtype`` (``e``'s by default); the scale is the
    larger of ``e``'s largest finite magnitude and ``reference`` (gradients pass the
    largest gradient of the backward: a sum that cancels to rounding noise is noise
    at the scale of its terms, not of its result)."""
    e, f = np.asarray(e), np.asarray(f)
    if e.shape != f.shape:
        return f"shape {f.shape} != eager {e.shape}"
    kind = np.dtype(dtype or e.dtype)
    if kind.kind != "f":
        bad = e != f
        if not bad.any():
            return ""
        i = tuple(int(x) for x in np.argwhere(bad)[0]) if e.ndim else ()
        text = (f"{int(bad.sum())} of {e.size} elements differ; first at {i}: fused {f[i]!r}, "
                f"eager {e[i]!r}")
        if flips and int(bad.sum()) <= max(2, e.size // 500):
            return f"{ROUNDING}: {text}"
        return text
    e64, f64 = e.astype(np.float64), f.astype(np.float64)
    nan_e, nan_f = np.isnan(e64), np.isnan(f64)
    inf_e, inf_f = np.isinf(e64), np.isinf(f64)
    # Where both are non-finite, NaN against +-inf is a matter of summation order: a sum
    # of huge terms overflows to inf or meets inf - inf = NaN depending on how it is
    # grouped (multi-threaded BLAS differs between two eager calls on the same input).
    both = ~np.isfinite(e64) & ~np.isfinite(f64)
    if ((nan_e != nan_f) & ~both).any():
        return _first("NaN positions differ", (nan_e != nan_f) & ~both, e64, f64)
    wrong_inf = ((inf_e != inf_f) & ~both) | (inf_e & inf_f & (np.sign(e64) != np.sign(f64)))
    if wrong_inf.any():
        return _first("infinities differ", wrong_inf, e64, f64)
    finite = ~(nan_e | inf_e) & ~(nan_f | inf_f)
    if not finite.any():
        return ""
    scale = max(float(np.abs(e64[finite]).max()), reference)
    rtol = RTOL.get(kind.name, 1e-4) if rtol is None else rtol
    with np.errstate(over="ignore", invalid="ignore"):
        err = np.where(finite, np.abs(f64 - e64), 0.0)
        bad = err > rtol * (np.abs(e64) + scale)
    if bad.any():
        worst = float(err.max())
        return _first(f"values differ (max |fused - eager| {worst:.3g} at scale {scale:.3g}, "
                      f"rtol {rtol:g})", bad, e64, f64)
    return ""


def _first(what: str, bad: np.ndarray, e: np.ndarray, f: np.ndarray) -> str:
    idx = tuple(int(x) for x in np.argwhere(bad)[0]) if e.ndim else ()
    return (f"{what}: {int(bad.sum())} of {e.size} elements; first at {idx}: fused "
            f"{f[idx]!r}, eager {e[idx]!r}")


def compare_tensors(e, f, flags: bool = True, rtol: float | None = None,
                    flips: bool = False) -> str:
    """Compare two fusionnet (or PyTorch) tensors: dtype, shape, values, and when
    ``flags`` also ``requires_grad`` and whether ``grad_fn`` is None; '' if they agree,
    else every difference found, joined by "; "."""
    de, df = _dtype_name(e), _dtype_name(f)
    if de != df:
        return f"dtype {df} != eager {de}"
    if tuple(e.shape) != tuple(f.shape):
        return f"shape {tuple(f.shape)} != eager {tuple(e.shape)}"
    found = []
    if flags:
        if bool(e.requires_grad) != bool(f.requires_grad):
            found.append(f"requires_grad {f.requires_grad} != eager {e.requires_grad}")
        elif (e.grad_fn is None) != (f.grad_fn is None):
            found.append(f"grad_fn is None: fused {f.grad_fn is None}, eager "
                         f"{e.grad_fn is None}")
    values = compare_arrays(_numpy(e), _numpy(f), de, rtol=rtol, flips=flips)
    return "; ".join(found + ([values] if values else []))


def _numpy(t) -> np.ndarray:
    return np.array(t.detach().cpu().numpy(), copy=True)


def _dtype_name(t) -> str:
    return str(t.dtype).rpartition(".")[2]


def flatten(result) -> tuple[str, list]:
    """(structure, tensors) of a forward's result: "tensor", "tuple", "list" or the
    type's name for anything else."""
    if isinstance(result, (tuple, list)):
        return type(result).__name__, list(result)
    if hasattr(result, "shape") and hasattr(result, "dtype"):
        return "tensor", [result]
    return type(result).__name__, []


def compare_outputs(e, f, flags: bool = True, rtol: float | None = None,
                    flips: bool = False) -> list[str]:
    """Every difference between two forward results (structure first, then each tensor)."""
    se, te = flatten(e)
    sf, tf = flatten(f)
    if se != sf or len(te) != len(tf):
        return [f"result is {sf} of {len(tf)}, eager returned {se} of {len(te)}"]
    out = []
    for i, (a, b) in enumerate(zip(te, tf)):
        diff = compare_tensors(a, b, flags, rtol, flips)
        if diff:
            out.append(f"output {i}: {diff}" if len(te) > 1 else diff)
    return out


def _builtin_bases(cls) -> set:
    return {c for c in cls.__mro__ if c.__module__ == "builtins" and c not in (
        BaseException, Exception, object)}


def same_kind(eager_exc: BaseException, fused_exc: BaseException) -> bool:
    """Whether ``fused_exc`` would be caught wherever ``eager_exc`` is: the same class, or
    an instance of every builtin exception class eager's error is (``ShapeError`` is a
    RuntimeError and a ValueError; fuse's input errors subclass what eager raised)."""
    if type(eager_exc) is type(fused_exc):
        return True
    bases = _builtin_bases(type(eager_exc))
    return bool(bases) and all(isinstance(fused_exc, c) for c in bases)


def describe_exception(exc: BaseException) -> str:
    """``TypeName: first line of the message``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"
