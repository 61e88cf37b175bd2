"""The op table. Importing this package fills :data:`OPS` with every row.

Rows live in small modules by kind: ``elementwise``, ``reduction``,
``linalg`` (matmul), ``layout`` (reshape, permute, indexing, cat, device
copies), ``conv`` and ``loss``. ``registry`` defines the :class:`Op` row itself.
"""
from . import conv, elementwise, layout, linalg, loss, reduction  # noqa: F401 - the rows
from .layout import (LAYOUT_STEPS, DataDependentShape, decode_key, encode_key, is_transpose,
                     layout_steps)
from .registry import OPS, Kind, Op, Reduction, get_op, register
from .rules import ShapeError

__all__ = ["OPS", "Op", "Kind", "Reduction", "get_op", "register", "ShapeError",
           "DataDependentShape", "encode_key", "decode_key", "LAYOUT_STEPS", "layout_steps",
           "is_transpose"]
