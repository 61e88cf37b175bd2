"""The op table: one :class:`Op` declaration per operation.

Everything that needs to know what an op *means* reads its row here: eager execution
and autograd (``fusionnet.dispatch``), the tracer, shape inference, the passes and the
code generators. A row says what an op means (its kind, its rules, its gradient, and
facts such as "may alias its input", "how a reduction accumulates", "the neutral
elements", "the layout steps it is made of"); how a backend *spells* an op lives in
that backend (``fusionnet/codegen/<backend>/``), never in the row. A new op is one
``register(Op(...))`` call plus its tests; ``tests/test_op_table.py`` fails on an
incomplete row.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..dtypes import result_dtype

__all__ = ["Kind", "Op", "Reduction", "OPS", "register", "get_op",
           "SAVES_NONE", "SAVES_INPUTS", "SAVES_OUTPUT", "SAVES_OTHERS"]


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
    """What a reduction row means to a code generator: how it accumulates.

    A generated reduction keeps one accumulator per output element (float64 for float
    results, int64 otherwise), sets it to ``start``, folds every input element in with
    ``acc = combine(acc, x)`` and then finishes it. Every backend that spells the
    ``combine`` op can therefore generate the reduction: a new reduction is one row.

    Attributes:
        combine: the name of a binary elementwise row that folds one element into the
            accumulator (``"add"`` for a sum, ``"mul"`` for a product, ``"maximum"``).
        start: the accumulator's first value: a number (``0`` for a sum, ``1`` for a
            product), or a function of the accumulator's dtype (``np.dtype``) that returns
            one (a maximum starts from ``-inf`` for floats and the smallest integer
            otherwise). Where ``empty_raises`` is False it is also what an empty input gives.
        empty_raises: an empty input has no identity value: the kernel raises
            ``ValueError("<name>() of an empty tensor has no identity value")`` as eager does.
        divide_by_count: the result is the accumulated value divided by the number of
            reduced elements (a mean).
    """

    combine: str
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
        doc: one line for docs and ``explain``.
        reduction: for ``REDUCTION`` rows a kernel can accumulate, how
            (:class:`Reduction`); ``None`` for every other row (``argmax`` returns an
            index, not an accumulated value: it runs eagerly).
        view: the result may be a view of the first input (share its memory, as
            NumPy's reshape, transpose, broadcast_to and basic indexing do). Autograd
            then treats it as a view only when NumPy really returned one.
        write_back: for ``view`` rows, how a new value of the view is written back
            into the input, as a table op: ``write_back(parent, value, **attrs) ->
            (op name, inputs, attrs)``; applying that op gives the input with the
            view's elements replaced by ``value``. ``None`` on a ``view`` row means
            a read-only view (``expand``: several elements share one location).
        layout: for layout rows that are array views a backend can build, the primitive
            layout steps the op is made of: ``layout(src_shape, out_shape, **attrs) ->
            ((step, arg), ...)``, applied in order to the input, each step one of
            :data:`fusionnet.ops.layout.LAYOUT_STEPS` (``("reshape", shape)``,
            ``("permute", dims)``, ``("expand", shape)``). Sizes may be symbolic (``"B"``):
            the function moves them around and never computes with them (the result's
            shape is given). Backends spell the steps, so a new view op is one row.
            ``None``: no such decomposition (``getitem``).
        returns_input: the eager result may be the first input itself, without being a view
            autograd tracks (``to_device`` to the input's own device, ``detach``). Buffer
            planning keeps that input alive as long as the result, as for a view's base.
        neutral: for binary rows, ``{position: value}``: the op returns its other operand
            when the operand at ``position`` is all ``value`` and the result has the other
            operand's shape and dtype (``mul``: 1 on either side; ``sub``: 0 on the right).
        same_type_is_identity: the op returns its first input unchanged whenever the result
            has that input's shape and dtype (``cast`` to the input's own dtype).
        value_errors: ``value_errors(**attrs) -> bool``: whether this application may raise
            depending on its inputs' *values* (an index tensor out of range). Dead-code
            elimination keeps such nodes: eager raises there even when the result is unused.
        bools_as: a dtype name: bool inputs are converted to it before computing
            (``"float32"`` for float math such as ``exp``: NumPy would take its float16
            loop for bools, and code generators must not call float functions on bools).
        refuses_bool: an error message: PyTorch refuses a bool tensor as any input of
            this op (``sub``, ``abs``), so eager dispatch raises ``TypeError`` with it
            before promotion turns the bool into a number.
        joins: for rows that copy their inputs side by side into one new array (``cat``,
            ``stack``): ``joins(ndim, **attrs) -> (axis, stacked)``, with ``ndim`` the
            inputs' rank: the result's axis the inputs are laid along, and whether each
            input is one index of a new axis there (``stack``) or a run of an existing
            one (``cat``). A backend that joins arrays spells every such row.
        selects: for indexing rows, ``selects(**attrs) -> key | None``: the Python key
            (ints, slices, ``None``, ``...``) when the result is ``input[key]``, a view
            (basic indexing); None when index tensors take part (advanced indexing).
        places: ``places(**attrs) -> key | None``: the result is zeros of the row's
            shape with the input written at that basic key (``getitem``'s gradient);
            None as for ``selects``.
        assigns: ``assigns(**attrs) -> key | None``: the result is a copy of the first
            input with the second written (broadcast, converted to the first's dtype) at
            that basic key (``setitem``); None as for ``selects``.
        index_of: ``"max"`` or ``"min"`` for rows whose result is the index (int64) of the
            first largest or smallest element along ``dim`` (of the flattened input when
            ``dim`` is None), NaN counting as both, as NumPy's ``argmax``/``argmin``:
            backends that find indices spell such rows.
        decompose: ``decompose(*tensors, **attrs) -> Tensor``: the op written with other
            table ops (``mse_loss``: a subtraction, a product, a mean). Eager runs the row
            as one op; a trace records the decomposition instead, which the compilers
            fuse. ``None``: the row is recorded as itself.
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
    promote: tuple | str = ()
    reduction: Reduction | None = None
    view: bool = False
    write_back: Callable | None = None
    layout: Callable | None = None
    returns_input: bool = False
    neutral: dict = field(default_factory=dict)
    same_type_is_identity: bool = False
    bools_as: str | None = None
    value_errors: Callable | None = None
    refuses_bool: str = ""
    joins: Callable | None = None
    selects: Callable | None = None
    places: Callable | None = None
    assigns: Callable | None = None
    index_of: str | None = None
    decompose: Callable | None = None

    @property
    def may_alias(self) -> bool:
        """Whether the eager result may share memory with the first input (a view, or the
        input itself)."""
        return self.view or self.returns_input

    def casts(self, dtypes, ndims) -> dict:
        """The inputs eager converts before computing: ``{index: common dtype}`` for each
        ``promote`` input whose dtype (``dtypes``: one NumPy dtype per input, ``ndims``:
        its number of dimensions) differs from the inputs' common dtype under PyTorch's
        promotion (:func:`~fusionnet.dtypes.result_dtype`: 0-d tensors weigh less);
        empty when nothing changes. Eager dispatch and the code generators both ask this
        (one rule)."""
        if self.bools_as is not None:
            return self._promoted_then_bools(dtypes, ndims)
        return self._promoted(dtypes, ndims)

    def _promoted(self, dtypes, ndims) -> dict:
        idx = range(len(dtypes)) if self.promote == "all" else self.promote
        if len(idx) < 2:
            return {}
        first = dtypes[idx[0]]
        for i in idx:  # the common case first: eager dispatch asks this for every binary op
            d = dtypes[i]
            if d is not first and d != first:
                break
        else:
            return {}
        common = result_dtype([dtypes[i] for i in idx], [ndims[i] for i in idx])
        return {i: common for i in idx if dtypes[i] != common}

    def _promoted_then_bools(self, dtypes, ndims) -> dict:
        """``casts`` for rows with ``bools_as``: promotion first, then bools converted."""
        plain = self._promoted(dtypes, ndims)
        if not any(d.kind == "b" for d in dtypes):
            return plain  # the common case, kept cheap: eager asks this on every call
        after = [plain.get(i, d) for i, d in enumerate(dtypes)]
        target = np.dtype(self.bools_as)
        out = dict(plain)
        for i, d in enumerate(after):
            if d.kind == "b":
                out[i] = target
        return out

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
    """Add ``op`` to the table (names are unique; a reduction combines with a binary
    elementwise row that is already registered)."""
    if op.name in OPS:
        raise ValueError(f"op {op.name!r} registered twice")
    if op.reduction is not None:
        combine = OPS.get(op.reduction.combine)
        if combine is None or combine.kind is not Kind.ELEMENTWISE or combine.arity != 2:
            raise ValueError(f"reduction {op.name!r}: combine={op.reduction.combine!r} must "
                             "name a registered binary elementwise op")
    OPS[op.name] = op
    return op


def get_op(name: str) -> Op:
    """The table row for ``name``, or a KeyError listing what exists."""
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"no op named {name!r}; known ops: {sorted(OPS)}") from None
