"""The op table: one :class:`Op` declaration per operation.

Everything that needs to know what an op *means* reads its row here:
eager execution and autograd (``fusionnet.dispatch``), and later the tracer,
shape inference, constant folding and the code generators. A new op is one
``register(Op(...))`` call plus its tests; ``tests/test_op_table.py`` fails on
an incomplete row.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Kind", "Op", "Reduction", "OPS", "register", "get_op", "BACKENDS",
           "SAVES_NONE", "SAVES_INPUTS", "SAVES_OUTPUT", "SAVES_OTHERS"]

#: Code generators that every op row must declare a slot for.
BACKENDS = ("numba", "cuda")


class Kind(enum.Enum):
    """How an op may be fused (TVM FuseOps style: by kind, never by name)."""

    ELEMENTWISE = "elementwise"  # out[i] depends on in[i] only (after broadcasting)
    REDUCTION = "reduction"      # reduces one or more axes
    MATMUL = "matmul"            # matmul-like: fusable with an elementwise epilogue
    INJECTIVE = "injective"      # layout only: reshape, permute, expand, indexing
    OPAQUE = "opaque"            # not fusable (data-dependent, device copies, ...)


# What a gradient rule reads from the forward pass, as a function of which
# inputs need a gradient. Autograd records the version of exactly these
# tensors and refuses to run backward if one was modified in place since.
def SAVES_NONE(needs):  # noqa: N802 - constant-like helper
    """The gradient reads nothing but shapes."""
    return (), False


def SAVES_INPUTS(needs):  # noqa: N802
    """The gradient reads every input."""
    return tuple(range(len(needs))), False


def SAVES_OUTPUT(needs):  # noqa: N802
    """The gradient reads the op's output."""
    return (), True


def SAVES_OTHERS(needs):  # noqa: N802
    """The gradient of input i reads the other inputs (mul, matmul)."""
    return tuple(j for j in range(len(needs))
                 if any(n for i, n in enumerate(needs) if i != j)), False


@dataclass(frozen=True)
class Reduction:
    """What a reduction row means to a code generator, beyond its ``combine`` template.

    A generated reduction keeps one accumulator per output element (float64 for float
    results, int64 otherwise), sets it to ``start``, folds every input element in with the
    row's ``combine`` template and then finishes it.

    Attributes:
        start: the accumulator's first value: a number (``0`` for a sum, ``1`` for a
            product), or a function of the accumulator's dtype (``np.dtype``) that returns
            one (a maximum starts from ``-inf`` for floats and the smallest integer
            otherwise). Where ``empty_raises`` is False it is also what an empty input gives.
        empty_raises: an empty input has no identity value: the kernel raises
            ``ValueError("<name>() of an empty tensor has no identity value")`` as eager does.
        divide_by_count: the result is the accumulated value divided by the number of
            reduced elements (a mean).
    """

    start: Any
    empty_raises: bool = False
    divide_by_count: bool = False

    def start_value(self, acc_dtype) -> Any:
        """The accumulator's first value for an accumulator of ``acc_dtype``."""
        return self.start(acc_dtype) if callable(self.start) else self.start


@dataclass(frozen=True)
class Op:
    """One row of the op table.

    Attributes:
        name: the op's name in graphs, errors and ``grad_fn`` names.
        kind: its :class:`Kind` for fusion decisions.
        arity: number of tensor inputs, or ``None`` if variadic (``cat``).
        eager: ``eager(xp, *arrays, **attrs) -> array`` with ``xp`` numpy or cupy.
        shape: ``shape(*input_shapes, **attrs) -> tuple``; raises ``ValueError``
            with a clear message when the shapes do not fit.
        dtype: ``dtype(*input_dtypes, **attrs) -> numpy dtype`` of the output,
            given inputs already promoted (see ``promote``).
        grad: ``grad(g, *inputs, out=, needs=, **attrs) -> tuple`` of one
            gradient Tensor (or None) per input, written with table ops
            (Tensor methods), so a backward can itself be recorded or traced.
            ``None`` when the op is not differentiable.
        saves: which forward tensors ``grad`` reads (``SAVES_*``).
        promote: indices of inputs cast to one common dtype before ``eager``
            (PyTorch's type promotion); Python scalars are weakly typed.
        emit: one code template per backend in :data:`BACKENDS` (a format string, or
            a function ``(arg_vars, attrs, dtype) -> str`` where a string cannot say
            it); ``None`` in a slot means "no emitter: this op runs eagerly" (stated,
            not missing). Templates spell structure only: the backend spells numbers
            (scalar attributes arrive as literals of the first operand's dtype).
            Reduction slots hold ``{"combine": ...}``; the rest is in ``reduction``.
        doc: one line for docs and ``explain``.
        reduction: for ``REDUCTION`` rows with an emitter, how the accumulator starts,
            what an empty input does and how the result finishes (:class:`Reduction`);
            ``None`` for every other row.
        view: the result may be a view of the first input (share its memory, as
            NumPy's reshape, transpose, broadcast_to and basic indexing do). Autograd
            then treats it as a view only when NumPy really returned one.
        write_back: for ``view`` rows, how a new value of the view is written back
            into the input, as a table op: ``write_back(parent, value, **attrs) ->
            (op name, inputs, attrs)``; applying that op gives the input with the
            view's elements replaced by ``value``. ``None`` on a ``view`` row means
            a read-only view (``expand``: several elements share one location).
    """

    name: str
    kind: Kind
    arity: int | None
    eager: Callable[..., Any]
    shape: Callable[..., tuple]
    dtype: Callable[..., Any]
    grad: Callable[..., tuple] | None
    doc: str
    saves: Callable = SAVES_INPUTS
    promote: tuple = ()
    emit: dict = field(default_factory=dict)
    reduction: Reduction | None = None
    view: bool = False
    write_back: Callable | None = None

    @property
    def differentiable(self) -> bool:
        """Whether gradients flow through this op."""
        return self.grad is not None

    @property
    def backward_name(self) -> str:
        """PyTorch-style ``grad_fn`` class name, e.g. ``MulBackward0``."""
        return "".join(p.capitalize() for p in self.name.split("_")) + "Backward0"


#: The table itself: op name -> Op. Filled by the modules of this package at import.
OPS: dict[str, Op] = {}


def register(op: Op) -> Op:
    """Add ``op`` to the table (names are unique)."""
    if op.name in OPS:
        raise ValueError(f"op {op.name!r} registered twice")
    OPS[op.name] = op
    return op


def get_op(name: str) -> Op:
    """The table row for ``name``, or a KeyError listing what exists."""
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"no op named {name!r}; known ops: {sorted(OPS)}") from None
