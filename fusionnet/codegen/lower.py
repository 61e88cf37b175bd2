"""Lower an optimized :class:`~fusionnet.graph.Graph` to a backend-neutral :class:`Program`.

A Program is a straight list of steps over named arrays: a :class:`Kernel` per fused
group and a :class:`View` per primitive layout step (a layout op left between groups is
lowered to the steps its row is made of, ``Op.layout``). Every backend (numba today, CUDA
later) renders the same Program and differs only in how it spells it. Sizes are
symbolic where the graph allows: a dim is either an int or a string expression in the
batch size ``B`` (see ``runtime/symbolic.py``), so the generated code reads sizes at
run time.

Kernel bodies are SSA statement lists evaluated at one index of the loop nest:

* ``("load", var, array, index)`` — ``index`` holds a loop variable name or
  ``"0"`` (a broadcast dimension) per array dimension;
* ``("const", var, value, dtype)`` — a literal scalar;
* ``("cast", var, src_var, dtype)`` — a conversion eager's type promotion does;
* ``("op", var, op_name, attrs, arg_vars, dtype)`` — one elementwise op-table row,
  spelled by the backend; its result is rounded to ``dtype`` as eager rounds every
  intermediate. ``attrs["single_element"]``, when present, says which operands hold a
  single element.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..graph import Graph
from ..regions import region_of
from ..ops import LAYOUT_STEPS, Kind, get_op, is_transpose, layout_steps

__all__ = ["Program", "Kernel", "View", "Join", "Index", "ArgIndex", "Param", "Block", "Loop", "Branch",
           "Unsupported", "BatchDependent", "lower", "walk_steps"]


class Unsupported(Exception):
    """The graph holds something this lowering cannot express; the caller falls back."""


class BatchDependent(Unsupported):
    """What the graph does depends on the batch size itself (an integer index into the
    batch dimension): code generic in the batch size cannot say it, code compiled for
    the exact batch can."""


@dataclass
class Param:
    """A live tensor read at call time (parameter, buffer or module constant)."""

    name: str
    node: int
    ref: object
    shape: tuple
    dtype: str
    kind: str = "param"   # param | buffer | constant | external: where ``target`` is found
    target: str = ""      # dotted name in the module, to re-resolve the reference


@dataclass
class Kernel:
    """One fused group: ``kind`` is elementwise | reduction | gemm."""

    name: str
    kind: str
    out: str
    shape: tuple
    dtype: str
    operands: list            # array names read, in argument order
    body: list                # SSA statements (see module docstring)
    result: str = ""          # the SSA var stored to ``out``
    ops: tuple = ()
    reduce: dict = field(default_factory=dict)  # op, attrs (dim, keepdim), source_shape
    gemm: dict = field(default_factory=dict)    # a, b, transposed
    buffer: int | None = None
    dtypes: dict = field(default_factory=dict)  # SSA var -> dtype name
    # Side outputs: (array, SSA var) stored at every index of the loop nest (the body's
    # values a reduction also hands out; arrays of the loop's shape, allocated fresh).
    stores: list = field(default_factory=list)
    # A full reduction's epilogue: SSA statements run once on the finished value
    # (``red``, of ``reduce["dtype"]``) after accumulating; ``out`` gets ``final``.
    finish: list = field(default_factory=list)
    final: str = ""

    @property
    def reduce_dtype(self) -> str:
        """The reduction's own result dtype (``dtype`` is the epilogue's, if any)."""
        return self.reduce.get("dtype", self.dtype)

    @property
    def outs(self) -> list:
        """Every array the kernel writes: ``out``, then the side outputs'."""
        return [self.out] + [array for array, _ in self.stores]


@dataclass
class View:
    """A primitive layout step, ``out = step(src, arg)`` as an array view: ``step`` is one
    of :data:`fusionnet.ops.LAYOUT_STEPS` (``reshape``/``expand``: ``arg`` is the new
    shape; ``permute``: the dims); ``shape`` is the result's (symbolic) shape."""

    out: str
    step: str
    src: str
    arg: tuple
    shape: tuple
    dtype: str


@dataclass
class Join:
    """``out``: a new array holding ``srcs`` side by side along ``axis`` (a row with
    ``Op.joins``: ``cat``, or ``stack`` when ``stacked``: each source is one index of
    that axis). ``sizes``: each source's (symbolic) extent along the axis."""

    out: str
    srcs: list
    axis: int
    stacked: bool
    sizes: list
    shape: tuple
    dtype: str


@dataclass
class Index:
    """Basic indexing (``Op.selects``/``Op.places``/``Op.assigns``): ``out = src[key]``,
    a view of ``src``; or, when ``place``, a new array holding zeros (or a copy of
    ``base``) with ``out[key] = src``. ``key`` holds ints, slices, ``None`` and ``...``
    (ints only into dimensions of a fixed size, so generated code never indexes outside
    an array)."""

    out: str
    src: str
    key: tuple
    place: bool
    shape: tuple
    dtype: str
    base: str | None = None


@dataclass
class ArgIndex:
    """``Op.index_of`` (``argmax``/``argmin``): ``out`` holds the index of the first
    ``which`` ("max"/"min") element of ``src`` along ``axis`` (None: of the flattened
    array), shaped ``shape`` (kept dims of size 1 included). ``op`` names the row, for
    the error an empty reduction raises, as eager's."""

    out: str
    src: str
    which: str
    axis: int | None
    src_rank: int
    op: str
    shape: tuple
    dtype: str


@dataclass
class Block:
    """The steps of a region body and the names of the values it produces."""

    steps: list
    results: list


@dataclass
class Loop:
    """A ``while`` region: ``state`` variables start as ``init``; ``cond`` computes the
    first test, ``body`` the new state and the next test; ``outs`` name the final state."""

    state: list
    init: list
    cond: Block
    body: Block
    outs: list


@dataclass
class Branch:
    """A ``cond`` region: ``then`` or ``orelse`` by the 0-d bool ``cond``; ``outs`` name
    the taken branch's results."""

    cond: str
    then: Block
    orelse: Block
    outs: list


def walk_steps(steps):
    """Every step, region bodies included (depth first, in order)."""
    for step in steps:
        yield step
        if isinstance(step, Loop):
            yield from walk_steps(step.cond.steps)
            yield from walk_steps(step.body.steps)
        elif isinstance(step, Branch):
            yield from walk_steps(step.then.steps)
            yield from walk_steps(step.orelse.steps)


@dataclass
class Program:
    """What a backend renders: inputs, live params, constants, steps, outputs."""

    name: str
    inputs: list = field(default_factory=list)
    params: list = field(default_factory=list)
    constants: list = field(default_factory=list)   # (name, ndarray)
    steps: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    structure: str = "tensor"                       # "tensor" (one array) or "tuple"
    spec: object = "T"                              # how the outputs nest (structure.py)
    symbols: dict = field(default_factory=dict)     # "B" -> (input name, dim)
    # Outputs the driver writes into one of its own arguments instead of returning them
    # (output index -> argument name): a training step updates parameters and optimiser
    # state in place (``runtime/step.py``). Set by the caller after lowering.
    writes: dict = field(default_factory=dict)
    shapes: dict = field(default_factory=dict)      # array name -> symbolic shape
    dtypes: dict = field(default_factory=dict)      # array name -> dtype name
    scalars: dict = field(default_factory=dict)     # name -> (python value, dtype)
    # Whether a backend may pass the parameters and constants as one address table
    # (numba: ``codegen/numba/table.py``); set by a caller that packs every tail it passes.
    table: bool = False


def _sym(d: dict) -> tuple:
    """A node's shape as the code sees it: ``sym_shape`` (ints and ``"B"``/``"k*B"``, set by
    the batch analysis in runtime/symbolic.py) where present, else the traced sizes."""
    return tuple(d.get("sym_shape", d["shape"]))


def lower(graph: Graph, symbols=None, backend=None) -> Program:
    """Build the Program for ``graph``; ``symbols`` maps ``"B"`` to (input name, dim).

    ``backend`` (default: :func:`~fusionnet.codegen.backend.default_backend`) only words
    the :class:`Unsupported` error for an op that is left unfused and is no layout op.
    Region bodies (loops, branches) become nested blocks of steps; their parameters and
    constants are the program's own."""
    prog = Program(graph.name, symbols=dict(symbols or {}))
    lowering = _Lowering(prog, backend)
    inputs = [f"x{graph.node(n)['target']}" for n in graph.inputs]
    prog.inputs = list(inputs)
    prog.steps, prog.outputs = lowering.graph(graph, "", inputs, top=True)
    out = graph.node(graph.output)
    prog.spec = out.get("spec", "T")
    # Hidden selector outputs (tracer.py, _select_passthrough) make a tuple of one tensor.
    prog.structure = "tensor" if prog.spec == "T" and not out.get("hidden") else "tuple"
    return prog


class _Lowering:
    """Lowers a graph and, recursively, the bodies of its regions into one Program."""

    def __init__(self, prog: Program, backend):
        self.prog, self.backend = prog, backend
        self.params: dict = {}   # (id(ref), detach) -> param name (shared by every body)

    def graph(self, graph: Graph, prefix: str, inputs: list, top: bool = False):
        """(steps, output names) of ``graph``; its input ``target`` i is ``inputs[i]``."""
        prog = self.prog
        steps: list = []
        names: dict[int, str] = {}
        returned = set(graph.node(graph.output)["args"])
        # Values a region or a body's result reads must be arrays in the driver, not
        # scalars inlined in kernels.
        as_array = {a for n in graph.regions() if not region_of(graph.node(n)).kernel
                    for a in graph.node(n)["args"]}
        as_array |= returned if not top else set()
        # ...and so must what the driver's own steps read (views, joins, indexing).
        as_array |= {a for n in graph.nodes_of("op") for a in graph.node(n)["args"]}
        outputs: list = []
        for nid in graph.order():
            d = graph.node(nid)
            kind = d["kind"]
            shape = _sym(d)
            name = f"{prefix}t{nid}"
            if kind == "input":
                name = inputs[d["target"]]
            elif kind in ("param", "buffer") or (kind == "constant" and "ref" in d):
                name = self.param(nid, d, shape, kind)
            elif kind == "constant":
                value = np.asarray(d["value"])
                if value.ndim == 0 and not (top and nid in returned) and nid not in as_array:
                    name = f"s{prefix}{nid}"
                    prog.scalars[name] = (value.item(), d["dtype"])
                else:
                    name = f"c{len(prog.constants)}"
                    prog.constants.append((name, value))
            elif kind == "group" and "outs" in d:   # side outputs: read through items
                operands = [names[a] for a in d["args"]]
                body = d["body"]
                outs = self._outs(prefix, nid, d, [_sym(body.node(r))
                                                   for r in body.node(body.output)["args"]])
                steps.append(_lower_group(prog, d, outs[0], operands, prog.shapes[outs[0]],
                                          side=outs[1:]))
                continue
            elif kind == "group":
                operands = [names[a] for a in d["args"]]
                steps.append(_lower_group(prog, d, name, operands, shape))
            elif kind == "op":
                _lower_layout(prog, steps, graph, d, name, names, shape, self.backend)
            elif kind == "while":
                steps.append(self.loop(graph, nid, d, names, prefix))
                continue
            elif kind == "cond":
                steps.append(self.branch(graph, nid, d, names, prefix))
                continue
            elif kind == "item":
                name = f"{prefix}r{d['args'][0]}_{d['target']}"
            elif kind == "output":
                outputs = [names[a] for a in d["args"]]
                continue
            else:
                raise Unsupported(f"node kind {kind!r} has no lowering")
            names[nid] = name
            prog.shapes[name] = shape
            prog.dtypes[name] = d["dtype"]
        return steps, outputs

    def param(self, nid, d, shape, kind) -> str:
        prog = self.prog
        key = (id(d["ref"]), bool(d.get("detach")))
        name = self.params.get(key)
        if name is None:
            name = f"p{len(prog.params)}"
            # Tensors found outside the module tree (globals, containers) are held by
            # reference; Python guards notice when the name is rebound.
            where = "external" if d.get("external") else kind
            prog.params.append(Param(name, nid, d["ref"], shape, d["dtype"], where,
                                     str(d.get("target", ""))))
            self.params[key] = name
        return name

    def _outs(self, prefix: str, nid: int, d, shapes: list) -> list:
        """Name a multi-result node's results, with the (symbolic) ``shapes`` of what
        produces them: a result no item reads any more (its readers pruned) must still
        be allocated at the size written into it, never at the traced batch."""
        outs = [f"{prefix}r{nid}_{k}" for k in range(len(d["outs"]))]
        for name, shape, (_, dtype) in zip(outs, shapes, d["outs"]):
            self.prog.shapes[name] = tuple(shape)
            self.prog.dtypes[name] = dtype
        return outs

    def loop(self, graph, nid, d, names, prefix) -> Loop:
        k = len(d["outs"])
        args = [names[a] for a in d["args"]]
        state = [f"{prefix}w{nid}_{i}" for i in range(k)]
        for i, var in enumerate(state):
            self.prog.shapes[var] = self.prog.shapes[args[i]]
            self.prog.dtypes[var] = self.prog.dtypes[args[i]]
        bound = state + args[k:]
        cond = Block(*self.graph(d["cond"], f"{prefix}c{nid}_", bound))
        body = Block(*self.graph(d["body"], f"{prefix}b{nid}_", bound))
        return Loop(state, args[:k], cond, body,
                    self._outs(prefix, nid, d, [self.prog.shapes[v] for v in state]))

    def branch(self, graph, nid, d, names, prefix) -> Branch:
        args = [names[a] for a in d["args"]]
        then = Block(*self.graph(d["then"], f"{prefix}i{nid}_", args[1:]))
        orelse = Block(*self.graph(d["else"], f"{prefix}e{nid}_", args[1:]))
        return Branch(args[0], then, orelse,
                      self._outs(prefix, nid, d, [self.prog.shapes[r] for r in then.results]))


def _lower_layout(prog: Program, out_steps: list, graph: Graph, d: dict, name: str,
                  names: dict, shape: tuple, backend) -> None:
    """A layout op left between groups -> one :class:`View` per primitive step of its row
    (``Op.layout``); anything else left unfused raises :class:`Unsupported`."""
    op = get_op(d["op"])
    if op.joins is not None and not _why_not(op, backend):
        srcs = [names[a] for a in d["args"]]
        ndim = len(graph.node(d["args"][0])["shape"])
        axis, stacked = op.joins(ndim, **dict(d["attrs"]))
        sizes = [1 if stacked else _sym(graph.node(a))[axis] for a in d["args"]]
        out_steps.append(Join(name, srcs, axis, stacked, sizes, shape, d["dtype"]))
        return
    if op.index_of is not None and not _why_not(op, backend):
        src = d["args"][0]
        rank = len(graph.node(src)["shape"])
        dim = dict(d["attrs"]).get("dim")
        # Along the only axis of a 1-D input is over all of it (numba's axis form would
        # return a scalar there).
        axis = None if dim is None or rank <= 1 else dim % rank
        out_steps.append(ArgIndex(name, names[src], op.index_of, axis, rank, op.name, shape,
                                  d["dtype"]))
        return
    for fact, place in ((op.selects, False), (op.places, True), (op.assigns, True)):
        if fact is not None and not _why_not(op, backend):
            key = fact(**dict(d["attrs"]))
            if key is None:
                raise Unsupported(f"op {d['op']!r} (at {d.get('source', '?')}) indexes with "
                                  "tensors (advanced indexing is not generated yet)")
            base = names[d["args"][0]] if fact is op.assigns else None
            src = d["args"][1 if base is not None else 0]
            _check_ints(key, shape if place else _sym(graph.node(src)), d)
            out_steps.append(Index(name, names[src], key, place, shape, d["dtype"], base))
            return
    steps = None
    if len(d["args"]) == 1:
        src_shape = _sym(graph.node(d["args"][0]))
        steps = layout_steps(op, src_shape, shape, d["attrs"])
    if steps is None:
        why = _why_not(op, backend) or "it is not part of a fused kernel"
        raise Unsupported(f"op {d['op']!r} (at {d.get('source', '?')}) has no "
                          f"code-generation emitter yet ({why})")
    if not steps:  # changes nothing (simplification was off): still a fresh name
        steps = (("reshape", shape),)
    src = names[d["args"][0]]
    for k, (step, arg) in enumerate(steps):
        last = k == len(steps) - 1
        out = name if last else f"{name}_{k}"
        src_shape = shape if last else LAYOUT_STEPS[step].result(src_shape, arg)
        out_steps.append(View(out, step, src, arg, src_shape, d["dtype"]))
        prog.shapes[out], prog.dtypes[out] = src_shape, d["dtype"]
        src = out


def _check_ints(key: tuple, shape: tuple, d) -> None:
    """An integer in ``key`` must index a dimension of fixed size (checked when traced):
    the size of a batch-dependent one is known only at run time, where an index that fit
    the traced batch may not fit."""
    consuming = sum(1 for k in key if k is not None and k is not Ellipsis)
    dim = 0
    for k in key:
        if k is Ellipsis:
            dim += len(shape) - consuming
        elif k is not None:
            if isinstance(k, int) and not isinstance(shape[dim], int):
                raise BatchDependent(f"op {d['op']!r} (at {d.get('source', '?')}) takes "
                                     f"an integer index into dimension {dim}, whose size "
                                     "varies with the batch size")
            dim += 1


def _why_not(op, backend) -> str:
    """Why ``backend`` (default: the one fusion plans for) cannot generate ``op``."""
    if backend is None:
        from .backend import default_backend  # noqa: PLC0415 - backend imports lower
        backend = default_backend()
    return backend.why_unsupported(op)


def _lower_group(prog: Program, d: dict, name: str, operands: list, shape: tuple,
                 side=()) -> Kernel:
    """One group node -> one Kernel (elementwise, reduction or gemm); ``side`` names the
    arrays its side outputs are stored in (the body output's later results)."""
    bg: Graph = d["body"]
    kind = d["group_kind"]
    order = [n for n in bg.order() if bg.node(n)["kind"] == "op"]
    kernel = Kernel(f"k_{name}", "gemm" if kind.startswith("gemm") else kind, name, shape,
                    d["dtype"], operands, [], ops=tuple(d["ops"]), buffer=d.get("buffer"))
    if side and kernel.kind == "gemm":
        raise Unsupported("side outputs of a GEMM kernel")
    var: dict[int, str] = {}
    loop_rank = len(shape)
    if kernel.kind == "gemm":
        matmul = next(n for n in order if get_op(bg.node(n)["op"]).kind is Kind.MATMUL)
        kernel.gemm = _gemm_operands(bg, matmul, operands)
        var[matmul] = "acc"  # the GEMM result at the current (i0, i1)
        kernel.dtypes["acc"] = bg.node(matmul)["dtype"]
        prologue = {a for a in bg.node(matmul)["args"] if _transposed_input(bg, a) is not None}
        order = [n for n in order if n != matmul and n not in prologue]
    elif kernel.kind == "reduction":
        at = next(i for i, n in enumerate(order)
                  if get_op(bg.node(n)["op"]).kind is Kind.REDUCTION)
        reduction, epilogue, order = order[at], order[at + 1:], order[:at]
        rd = bg.node(reduction)
        source = rd["args"][0]
        loop_rank = len(bg.node(source)["shape"])
        kernel.reduce = {"op": rd["op"], "attrs": dict(rd["attrs"]), "source": source,
                         "source_shape": _sym(bg.node(source)), "dtype": rd["dtype"]}
    _lower_elementwise(kernel, order, var, prog, operands, bg, loop_rank, kind)
    results = bg.node(bg.output)["args"]
    root = kernel.reduce.pop("source") if kernel.reduce else results[0]
    kernel.result = var[root] if root in var else _load(kernel, var, prog, operands, bg,
                                                        root, loop_rank)
    # Side outputs have the loop nest's shape: each is stored at the current index.
    kernel.stores = [(array, var[n]) for array, n in zip(side, results[1:])]
    if kernel.kind == "reduction" and epilogue:
        # Built into a statement list of its own (the loop body's loads are out of scope
        # after the loop), then kept apart from the body as ``finish``.
        body, kernel.body = kernel.body, []
        kernel.dtypes["red"] = rd["dtype"]
        _lower_elementwise(kernel, epilogue, {reduction: "red"}, prog, operands, bg, 0, kind)
        kernel.finish, kernel.body = kernel.body, body
        kernel.final = f"v{epilogue[-1]}"
    return kernel


def _lower_elementwise(kernel: Kernel, order: list, var: dict, prog, operands, bg: Graph,
                       loop_rank: int, kind: str) -> None:
    """Append one SSA statement per elementwise body node in ``order`` (and the loads and
    casts they need) to ``kernel.body``; ``var`` maps body nodes to their SSA vars."""
    for n in order:
        bd = bg.node(n)
        if get_op(bd["op"]).kind is not Kind.ELEMENTWISE:
            raise Unsupported(f"{bd['op']} inside a {kind} kernel")
        args = [var[a] if a in var else _load(kernel, var, prog, operands, bg, a, loop_rank)
                for a in bd["args"]]
        args = _promote_args(kernel, n, get_op(bd["op"]), args,
                             [len(bg.node(a)["shape"]) for a in bd["args"]])
        var[n] = f"v{n}"
        attrs = dict(bd["attrs"])
        # Which operands hold one element (every dim 1): NumPy's power takes a square
        # root for a single-element exponent of 0.5, so a spelling may need to know.
        single = tuple(all(dim == 1 for dim in bg.node(a)["shape"]) for a in bd["args"])
        if any(single):
            attrs["single_element"] = single
        kernel.body.append(("op", var[n], bd["op"], attrs, args, bd["dtype"]))
        kernel.dtypes[var[n]] = bd["dtype"]


def _promote_args(kernel: Kernel, n: int, op, args: list, ndims: list) -> list:
    """Cast arguments to the op's promoted dtype, as eager does before computing
    (an int64 compared with a float32 compares in float32, not float64): ``Op.casts``
    (``ndims``: each argument's rank before broadcasting, which promotion reads)."""
    casts = op.casts([np.dtype(kernel.dtypes[a]) for a in args], ndims)
    out = list(args)
    for i, common in casts.items():
        cast = f"p{n}_{i}"
        kernel.body.append(("cast", cast, args[i], common.name))
        kernel.dtypes[cast] = common.name
        out[i] = cast
    return out


def _load(kernel: Kernel, var, prog, operands, bg: Graph, a: int, out_rank: int) -> str:
    """Add the statement that reads body input ``a`` at the current loop index."""
    bd = bg.node(a)
    if bd["kind"] != "input":
        raise Unsupported(f"unexpected {bd['kind']} node inside a kernel body")
    array = operands[bd["target"]]
    v = f"a{a}"
    if array in prog.scalars:
        value, dtype = prog.scalars[array]
        kernel.body.append(("const", v, value, dtype))
    else:
        kernel.body.append(("load", v, array, _broadcast_index(prog.shapes[array], out_rank)))
    kernel.dtypes[v] = bd["dtype"]
    var[a] = v
    return v


def _broadcast_index(shape, out_rank: int) -> tuple:
    """Index of an operand of ``shape`` inside a loop nest of rank ``out_rank``."""
    lead = out_rank - len(shape)
    index = []
    for j, dim in enumerate(shape):
        index.append("0" if dim == 1 else f"i{lead + j}")
    return tuple(index)


def _gemm_operands(bg: Graph, matmul: int, operands: list) -> dict:
    """What a matmul-kind node's native kernel reads: its operands (``args``; ``a``, ``b``
    and whether each is read transposed, for 2-D products), their ranks and the node's
    attributes. The backend says which ranks its kernel for the op is generated for."""
    md = bg.node(matmul)
    found = [_input_or_transposed(bg, a, operands) for a in md["args"]]
    if any(name is None for name, _ in found):
        raise Unsupported(f"a {md['op']} operand is computed inside the kernel (only inputs "
                          "and transposed inputs are generated)")
    names = [name for name, _ in found]
    ranks = (len(md["shape"]),) + tuple(len(bg.node(a)["shape"]) for a in md["args"])
    return {"args": names, "ranks": ranks, "attrs": dict(md["attrs"]),
            "a": names[0], "b": names[1] if len(names) > 1 else None,
            "transposed": len(found) > 1 and found[1][1], "a_transposed": found[0][1]}


def _transposed_input(bg: Graph, n: int) -> int | None:
    """The body input that node ``n`` is the 2-D transpose of (its row's layout steps are
    one transpose), or None."""
    d = bg.node(n)
    if d["kind"] != "op" or len(d["args"]) != 1 or bg.node(d["args"][0])["kind"] != "input":
        return None
    src = d["args"][0]
    steps = layout_steps(get_op(d["op"]), bg.node(src)["shape"], d["shape"], d["attrs"])
    return src if steps is not None and is_transpose(steps) else None


def _input_or_transposed(bg: Graph, n: int, operands: list):
    """(operand name, transposed?) for a matmul argument, or (None, False)."""
    d = bg.node(n)
    if d["kind"] == "input":
        return operands[d["target"]], False
    src = _transposed_input(bg, n)
    if src is not None:
        return operands[bg.node(src)["target"]], True
    return None, False
