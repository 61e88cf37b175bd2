"""Lower an optimized :class:`~fusionnet.graph.Graph` to a backend-neutral :class:`Program`.

A Program is a straight list of steps over named arrays; every backend
(numba today, CUDA later) renders the same Program and differs only in its
emitter. Sizes are symbolic where the graph allows: a dim is either an int or
a string expression in the batch size ``B`` (see ``runtime/symbolic.py``), so
the generated code reads sizes at run time.

Kernel bodies are SSA statement lists evaluated at one index of the loop nest:

* ``("load", var, array, index)`` — ``index`` holds a loop variable name or
  ``"0"`` (a broadcast dimension) per array dimension;
* ``("const", var, value, dtype)`` — a literal scalar;
* ``("cast", var, src_var, dtype)`` — a conversion eager's type promotion does;
* ``("op", var, op_name, attrs, arg_vars, dtype)`` — one op-table row, rendered from
  the row's ``emit`` template by the backend; its result is rounded to ``dtype``
  as eager rounds every intermediate.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..dtypes import promote
from ..graph import Graph
from ..ops import Kind, get_op

__all__ = ["Program", "Kernel", "View", "Param", "Unsupported", "lower"]

#: Layout ops every backend can express as array views.
VIEW_OPS = ("reshape", "permute", "expand")


class Unsupported(Exception):
    """The graph holds something this lowering cannot express; the caller falls back."""


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


@dataclass
class View:
    """A layout step: ``out = op(src)`` as a view (reshape, permute, expand)."""

    out: str
    op: str
    src: str
    attrs: dict
    shape: tuple
    dtype: str


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
    shapes: dict = field(default_factory=dict)      # array name -> symbolic shape
    dtypes: dict = field(default_factory=dict)      # array name -> dtype name
    scalars: dict = field(default_factory=dict)     # name -> (python value, dtype)


def _sym(d: dict) -> tuple:
    """A node's shape as the code sees it: ``sym_shape`` (ints and ``"B"``/``"k*B"``, set by
    the batch analysis in runtime/symbolic.py) where present, else the traced sizes."""
    return tuple(d.get("sym_shape", d["shape"]))


def lower(graph: Graph, symbols=None) -> Program:
    """Build the Program for ``graph``; ``symbols`` maps ``"B"`` to (input name, dim)."""
    prog = Program(graph.name, symbols=dict(symbols or {}))
    names: dict[int, str] = {}
    returned = set(graph.node(graph.output)["args"])
    for nid in graph.order():
        d = graph.node(nid)
        kind = d["kind"]
        shape = _sym(d)
        if kind == "input":
            name = f"x{d['target']}"
            prog.inputs.append(name)
        elif kind in ("param", "buffer") or (kind == "constant" and "ref" in d):
            name = f"p{len(prog.params)}"
            ref = d["ref"]
            # Tensors found outside the module tree (globals, containers) are held by
            # reference; Python guards notice when the name is rebound.
            where = "external" if d.get("external") else kind
            prog.params.append(Param(name, nid, ref, shape, d["dtype"], where,
                                     str(d.get("target", ""))))
        elif kind == "constant":
            value = np.asarray(d["value"])
            if value.ndim == 0 and nid not in returned:
                name = f"s{nid}"
                prog.scalars[name] = (value.item(), d["dtype"])
            else:
                name = f"c{len(prog.constants)}"
                prog.constants.append((name, value))
        elif kind == "group":
            name = f"t{nid}"
            operands = [names[a] for a in d["args"]]
            prog.steps.append(_lower_group(prog, d, name, operands, shape))
        elif kind == "op":
            name = f"t{nid}"
            if d["op"] not in VIEW_OPS:
                raise Unsupported(f"op {d['op']!r} (at {d.get('source', '?')}) has no "
                                  "code-generation emitter yet")
            prog.steps.append(View(name, d["op"], names[d["args"][0]], dict(d["attrs"]),
                                   shape, d["dtype"]))
        elif kind == "output":
            prog.outputs = [names[a] for a in d["args"]]
            prog.spec = d.get("spec", "T")
            prog.structure = "tensor" if prog.spec == "T" else "tuple"
            continue
        else:
            raise Unsupported(f"node kind {kind!r}")
        names[nid] = name
        prog.shapes[name] = shape
        prog.dtypes[name] = d["dtype"]
    return prog


def _lower_group(prog: Program, d: dict, name: str, operands: list, shape: tuple) -> Kernel:
    """One group node -> one Kernel (elementwise, reduction or gemm)."""
    bg: Graph = d["body"]
    kind = d["group_kind"]
    order = [n for n in bg.order() if bg.node(n)["kind"] == "op"]
    kernel = Kernel(f"k_{name}", "gemm" if kind.startswith("gemm") else kind, name, shape,
                    d["dtype"], operands, [], ops=tuple(d["ops"]), buffer=d.get("buffer"))
    var: dict[int, str] = {}
    loop_rank = len(shape)
    if kernel.kind == "gemm":
        matmul = next(n for n in order if get_op(bg.node(n)["op"]).kind is Kind.MATMUL)
        kernel.gemm = _gemm_operands(bg, matmul, operands)
        var[matmul] = "acc"  # the GEMM result at the current (i0, i1)
        kernel.dtypes["acc"] = bg.node(matmul)["dtype"]
        order = [n for n in order if n != matmul and bg.node(n)["op"] != "permute"]
    elif kernel.kind == "reduction":
        reduction = order.pop()
        rd = bg.node(reduction)
        source = rd["args"][0]
        loop_rank = len(bg.node(source)["shape"])
        kernel.reduce = {"op": rd["op"], "attrs": dict(rd["attrs"]), "source": source,
                         "source_shape": _sym(bg.node(source))}
    for n in order:
        bd = bg.node(n)
        if get_op(bd["op"]).kind is not Kind.ELEMENTWISE:
            raise Unsupported(f"{bd['op']} inside a {kind} kernel")
        args = [var[a] if a in var else _load(kernel, var, prog, operands, bg, a, loop_rank)
                for a in bd["args"]]
        args = _promote_args(kernel, n, get_op(bd["op"]), args)
        var[n] = f"v{n}"
        kernel.body.append(("op", var[n], bd["op"], dict(bd["attrs"]), args, bd["dtype"]))
        kernel.dtypes[var[n]] = bd["dtype"]
    root = kernel.reduce.pop("source") if kernel.reduce else bg.node(bg.output)["args"][0]
    kernel.result = var[root] if root in var else _load(kernel, var, prog, operands, bg,
                                                        root, loop_rank)
    return kernel


def _promote_args(kernel: Kernel, n: int, op, args: list) -> list:
    """Cast arguments to the op's promoted dtype, as eager does before computing
    (an int64 compared with a float32 compares in float32, not float64)."""
    idx = range(len(args)) if op.promote == "all" else op.promote
    if len(idx) < 2:
        return args
    common = np.dtype(kernel.dtypes[args[idx[0]]])
    for i in idx[1:]:
        common = promote(common, np.dtype(kernel.dtypes[args[i]]))
    out = list(args)
    for i in idx:
        if np.dtype(kernel.dtypes[args[i]]) != common:
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
    md = bg.node(matmul)
    if len(md["shape"]) != 2 or any(len(bg.node(a)["shape"]) != 2 for a in md["args"]):
        raise Unsupported("only 2-D matmul is generated so far")
    a_node, b_node = md["args"]
    a, a_transposed = _input_or_transposed(bg, a_node, operands)
    b, b_transposed = _input_or_transposed(bg, b_node, operands)
    if a is None or b is None:
        raise Unsupported("a matmul operand is computed inside the kernel (only inputs and "
                          "transposed inputs are generated)")
    return {"a": a, "b": b, "transposed": b_transposed, "a_transposed": a_transposed}


def _input_or_transposed(bg: Graph, n: int, operands: list):
    """(operand name, transposed?) for a matmul argument, or (None, False)."""
    d = bg.node(n)
    if d["kind"] == "input":
        return operands[d["target"]], False
    if d["kind"] == "op" and d["op"] == "permute" and bg.node(d["args"][0])["kind"] == "input":
        return operands[bg.node(d["args"][0])["target"]], True
    return None, False
