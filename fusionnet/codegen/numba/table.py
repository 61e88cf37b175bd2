"""The address table: a driver's parameters and constants passed as one int64 array.

numba unboxes every array argument of a call (type check, a MemInfo, a struct), about
0.15-0.3 us each; a model with a dozen weight arrays pays more for that than for its
arithmetic at batch 2. So a Program built with ``table=True`` takes, instead of those
arrays, one table of their addresses, and the driver rebuilds each array with
``numba.carray`` at the shape and dtype it was compiled for.

Memory safety rests on :func:`pack`, which every table passes through: it admits only
plain NumPy arrays that are C-contiguous, aligned (and writeable where the driver writes
them) with exactly the compiled shape and dtype, and the table owns references to them,
so the arrays outlive any call that holds the table. Anything else makes ``pack`` return
None, and the runtime compiles again (the new driver takes such an array as an ordinary
argument).
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from .emitters import dims

__all__ = ["Slot", "slots", "arguments", "unpack_lines", "pack"]


@dataclass(frozen=True)
class Slot:
    """One tail array that travels in the table."""

    position: int          # index in the tail (parameters, then constants)
    name: str              # its name in the driver
    shape: tuple
    dtype: np.dtype
    written: bool          # the driver writes into it (a training step's update)


def _tail(prog) -> list:
    """(name, array at compile time) of the tail, in the order the driver takes it."""
    return [(p.name, p.ref._data) for p in prog.params] + list(prog.constants)


def _fits(a, shape, dtype, written: bool) -> bool:
    return (type(a) is np.ndarray and a.shape == shape and a.dtype == dtype
            and a.flags.c_contiguous and a.flags.aligned and (a.flags.writeable or not written))


def slots(prog) -> tuple:
    """The tail arrays of ``prog`` that go in its table (none unless ``prog.table``):
    those that already fit the table's rules at compile time and are at least 1-D."""
    if not getattr(prog, "table", False):
        return ()
    written = set(prog.writes.values())
    out = []
    for i, (name, a) in enumerate(_tail(prog)):
        if (type(a) is np.ndarray and a.ndim >= 1
                and _fits(a, a.shape, a.dtype, name in written)):
            out.append(Slot(i, name, tuple(a.shape), a.dtype, name in written))
    return tuple(out)


def arguments(prog, table: tuple) -> list:
    """The driver's tail argument names: the arrays outside the table, then the table."""
    inside = {s.position for s in table}
    names = [name for i, (name, _) in enumerate(_tail(prog)) if i not in inside]
    return names + (["table"] if table else [])


def unpack_lines(table: tuple, ind: str) -> list:
    """Driver lines that rebuild each table array as a view of its address."""
    return [f"{ind}{s.name} = numba.carray(pointer_at(table[{k}], np.{s.dtype.name}), "
            f"{dims(s.shape)})" for k, s in enumerate(table)]


def pack(table: tuple, tail) -> tuple | None:
    """The tail as the driver takes it: the arrays outside the table, then the table;
    None when an array no longer fits its slot (compile again)."""
    if not table:
        return tuple(tail)
    tail = list(tail)
    inside = {}
    for s in table:
        a = tail[s.position]
        if not _fits(a, s.shape, s.dtype, s.written):
            return None
        inside[s.position] = a
    raw = (ctypes.c_int64 * len(table))(*[inside[s.position].ctypes.data for s in table])
    # The table's buffer owns the arrays: whoever holds the table keeps them alive.
    raw.arrays = tuple(inside.values())
    addresses = np.frombuffer(raw, np.int64)
    return tuple(a for i, a in enumerate(tail) if i not in inside) + (addresses,)
