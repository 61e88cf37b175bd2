"""PyTorch-style ``repr`` of tensors: ``tensor([[ 0.1000, -2.0000]], requires_grad=True)``."""
from __future__ import annotations

import numpy as np

__all__ = ["format_tensor"]

_QUIET_DTYPES = ("float32", "int64", "bool")


def _ratio(nonzero: np.ndarray) -> float:
    with np.errstate(over="ignore", divide="ignore"):
        return float(np.float64(nonzero.max()) / np.float64(nonzero.min()))


def _float_formatter(values: np.ndarray):
    """Pick PyTorch's float style for these values: integral, fixed 4 decimals or scientific."""
    finite = values[np.isfinite(values)]
    nonzero = np.abs(finite[finite != 0])
    if finite.size and np.all(finite == np.round(finite)) and (
            not nonzero.size or nonzero.max() < 1e8):
        fmt = "{:.0f}."
    elif nonzero.size and (_ratio(nonzero) > 1000.0 or nonzero.max() > 1e8
                           or nonzero.min() < 1e-4):
        fmt = "{:.4e}"
    else:
        fmt = "{:.4f}"

    def one(v):
        if not np.isfinite(v):
            return "nan" if np.isnan(v) else ("inf" if v > 0 else "-inf")
        return fmt.format(v)

    shown = values.reshape(-1)
    if shown.size > 1000:  # only the summarised corners are printed
        shown = np.concatenate([shown[:3], shown[-3:]])
    width = max((len(one(v)) for v in shown), default=1)
    return lambda v: one(v).rjust(width)


def format_tensor(array: np.ndarray, suffixes: list[str], prefix: str = "tensor(") -> str:
    """``tensor(<values>, <suffixes...>)`` with PyTorch's number style and line breaks."""
    extra = list(suffixes)
    if array.dtype.name not in _QUIET_DTYPES:
        at = 1 if extra and extra[0].startswith("device=") else 0  # PyTorch's order
        extra.insert(at, f"dtype=fusionnet.{array.dtype.name}")
    if array.size == 0:
        body = "[]"
        if array.shape != (0,):
            extra.insert(0, f"size={tuple(array.shape)}")
    else:
        formatter = {}
        if array.dtype.kind == "f":
            formatter["float_kind"] = _float_formatter(array)
        elif array.dtype.kind == "b":  # PyTorch pads to the widest value present
            width = 5 if not array.all() else 4
            formatter["bool"] = lambda v: str(bool(v)).rjust(width)
        body = np.array2string(array, separator=", ", prefix=prefix, threshold=1000,
                               edgeitems=3, max_line_width=80, formatter=formatter or None)
    tail = "".join(", " + s for s in extra)
    return f"{prefix}{body}{tail})"
