"""Flatten what ``forward`` returns into tensor leaves, and rebuild it.

A compiled forward returns a flat tuple of arrays; eager code may return a tensor,
a tuple, a list, a namedtuple or a dict of tensors (nested), with Python constants
(``None``, numbers, strings) mixed in. :func:`flatten` turns such a value into its
tensor leaves plus a *spec*, plain nested tuples that say how to put it back
together; :func:`unflatten` is the inverse.

Specs (``cls`` is the live namedtuple class, the only non-literal part)::

    "T"                                 one tensor leaf
    ("const", value)                    a Python constant returned as it was
    ("tuple", (spec, ...))              also "list"
    ("namedtuple", cls, (spec, ...))
    ("dict", (key, ...), (spec, ...))   keys in the dict's own order

>>> spec = flatten((t, {"a": u, "b": None}), is_leaf)[1]
>>> spec
('tuple', ('T', ('dict', ('a', 'b'), ('T', ('const', None)))))
"""
from __future__ import annotations

from typing import Any, Callable

__all__ = ["flatten", "unflatten", "leaf_count", "describe", "CONSTANT_TYPES"]

#: Python values that may appear in an output as they are (rebuilt unchanged).
CONSTANT_TYPES = (type(None), bool, int, float, str)


def _is_namedtuple(value) -> bool:
    return isinstance(value, tuple) and hasattr(type(value), "_fields")


def flatten(value, is_leaf: Callable[[Any], bool]) -> tuple[list, Any]:
    """``(leaves, spec)`` for ``value``; raises TypeError naming what cannot be returned."""
    leaves: list = []

    def walk(v, where):
        if is_leaf(v):
            leaves.append(v)
            return "T"
        if isinstance(v, CONSTANT_TYPES):
            return ("const", v)
        if _is_namedtuple(v):
            return ("namedtuple", type(v),
                    tuple(walk(x, f"{where}.{f}") for x, f in zip(v, type(v)._fields)))
        if type(v) in (tuple, list):
            return (type(v).__name__, tuple(walk(x, f"{where}[{i}]") for i, x in enumerate(v)))
        if type(v) is dict:
            keys = tuple(v)
            for k in keys:
                if not isinstance(k, CONSTANT_TYPES):
                    raise TypeError(f"{where} has a key of type {type(k).__name__}; only "
                                    "str, int, float, bool and None keys can be rebuilt")
            return ("dict", keys, tuple(walk(v[k], f"{where}[{k!r}]") for k in keys))
        raise TypeError(f"{where} is a {type(v).__name__}; a compiled forward can return "
                        "tensors, Python constants and tuples, lists, namedtuples and dicts "
                        "of them")

    spec = walk(value, "the output")
    return leaves, spec


def unflatten(spec, leaves) -> Any:
    """Rebuild the value that :func:`flatten` described, taking leaves in order."""
    it = iter(leaves)

    def build(s):
        if s == "T":
            return next(it)
        tag = s[0]
        if tag == "const":
            return s[1]
        if tag == "tuple":
            return tuple(build(x) for x in s[1])
        if tag == "list":
            return [build(x) for x in s[1]]
        if tag == "namedtuple":
            return s[1](*[build(x) for x in s[2]])
        if tag == "dict":
            return {k: build(x) for k, x in zip(s[1], s[2])}
        raise ValueError(f"unknown output spec {s!r}")

    return build(spec)


def leaf_count(spec) -> int:
    """How many tensor leaves ``spec`` holds."""
    if spec == "T":
        return 1
    tag = spec[0]
    if tag == "const":
        return 0
    children = spec[2] if tag in ("namedtuple", "dict") else spec[1]
    return sum(leaf_count(c) for c in children)


def describe(spec) -> str:
    """A short, stable, plain-text form of ``spec`` (for hashes and printing)."""
    if spec == "T":
        return "T"
    tag = spec[0]
    if tag == "const":
        return repr(spec[1])
    if tag == "namedtuple":
        cls = spec[1]
        inner = ", ".join(describe(c) for c in spec[2])
        return f"{cls.__module__}.{cls.__qualname__}({inner})"
    if tag == "dict":
        return "{" + ", ".join(f"{k!r}: {describe(c)}" for k, c in zip(spec[1], spec[2])) + "}"
    inner = ", ".join(describe(c) for c in spec[1])
    return f"({inner},)" if tag == "tuple" else f"[{inner}]"
