"""The op table. Importing this package fills :data:`OPS` with every row.

Rows live in small modules by kind: ``elementwise``, ``reduction``,
``linalg`` (matmul) and ``layout`` (reshape, permute, indexing, cat, device
copies). ``registry`` defines the :class:`Op` row itself.
"""
from . import elementwise, layout, linalg, reduction  # noqa: F401 - registers the rows
from .layout import DataDependentShape, decode_key, encode_key
from .registry import BACKENDS, OPS, Kind, Op, get_op, register
from .rules import ShapeError

__all__ = ["OPS", "Op", "Kind", "BACKENDS", "get_op", "register", "ShapeError",
           "DataDependentShape", "encode_key", "decode_key"]
