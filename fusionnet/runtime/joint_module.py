"""A fused module's compiled backward: the joint graph, split into forward and backward.

For a signature whose output requires grad, the module is traced once more as
``(*inputs, g) -> (out, grads...)`` with the backward recorded by
:func:`~fusionnet.runtime.joint.backward_in_trace` (the *joint* graph). It is then
split in two:

* the **forward** computes ``out`` and the values the backward reads (activations,
  ReLU masks): every node that does not depend on ``g``;
* the **backward** takes ``g``, those saved values and the inputs it reads, and gives
  the gradients. Layout views and values computed from parameters alone are recomputed
  there instead of saved (they cost nothing or read live state anyway).

Both go through the ordinary passes, lowering and backend, batch-generic where two
probe batch sizes agree (as ``symbolic.py`` decides for a forward). At run time the
forward's result carries one autograd node whose gradient is one native call of the
backward; parameter gradients accumulate into ``.grad`` as eager's engine does, input
gradients flow on through the engine, and the node's saved list holds the inputs and
parameters the backward reads, so an in-place change before ``backward()`` raises
eager's error and ``retain_graph`` behaves as in eager.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import autograd, dispatch
from ..codegen import Unsupported, lower
from ..codegen.backend import default_backend
from ..graph import Graph, GraphBreak
from ..nn import Module
from ..ops import Kind, Op, get_op
from ..passes.eliminate_dead_code import may_raise_on_values
from ..tensor import Tensor
from ..tracer import TraceError, trace
from .joint import NotDifferentiable, backward_in_trace, leaf_of
from .symbolic import PROBES, MIN_GENERIC_BATCH, BatchAnalysis, _agrees, _annotate, _probe

__all__ = ["JointBackward", "build_joint", "attach_joint", "split"]


class _JointModule(Module):
    """``(*inputs, g) -> (out, (grad of each leaf...))``: the module with its backward."""

    def __init__(self, module):
        super().__init__()
        self.add_module("m", module)
        object.__setattr__(self, "_leaves", [])

    def forward(self, *args):
        """The module's forward, then its backward from ``g`` recorded into the trace."""
        *xs, g = args
        out = self.m(*xs)
        if not isinstance(out, Tensor):
            raise NotDifferentiable("forward does not return a single tensor")
        tracer = dispatch.trace_hook()
        leaves = backward_in_trace(tracer, out, g)
        params = {leaf_of(tracer, p): p for p in self.m.parameters()}
        inputs = {tracer.node_of.get(id(x)): i for i, x in enumerate(xs)}
        found, grads = [], []
        for nid, grad in sorted(leaves.items()):
            if nid in params:
                found.append(("param", params[nid]))
            elif nid in inputs:
                found.append(("input", inputs[nid]))
            else:
                raise NotDifferentiable("the gradient reaches a tensor that is neither a "
                                        "parameter nor an input")
            grads.append(grad)
        self._leaves[:] = found
        return out, tuple(grads)


@dataclass
class JointBackward:
    """The compiled backward of one signature and what it reads."""

    compiled: object
    params: list                 # live tensors the backward reads, in driver order
    constants: list
    leaves: list                 # ("param", tensor) | ("input", position) per gradient
    input_reads: list            # positions of forward inputs the backward reads
    n_saved: int
    saved_bytes: int = 0         # per call at the traced sizes (explain)
    graph: Graph | None = None
    forward_graph: Graph | None = None
    generic: bool = False
    notes: list = field(default_factory=list)


def _grad_values(graph: Graph, g_in: int) -> set:
    """Nodes that depend on the upstream gradient ``g_in``."""
    import networkx as nx  # noqa: PLC0415

    return {g_in} | nx.descendants(graph.nx, g_in)


def _state_only(graph: Graph, n: int, memo: dict) -> bool:
    """Computed from parameters, buffers and constants alone (no input)."""
    if n not in memo:
        d = graph.node(n)
        memo[n] = d["kind"] in ("param", "buffer", "constant") or (
            d["kind"] == "op" and all(_state_only(graph, a, memo) for a in d["args"]))
    return memo[n]


def _recomputable(graph: Graph, n: int, memo: dict, forward: set) -> bool:
    """Cheaper to redo in the backward than to save: values of live state alone, layout
    views (of whatever they view, which is then saved or recomputed itself), and
    elementwise values the forward does not need for its output (a ReLU mask ``h > 0``:
    recomputed from the saved ``h`` inside the backward's GEMM epilogue, so the forward
    runs exactly the kernels it runs without grad)."""
    d = graph.node(n)
    if _state_only(graph, n, memo):
        return True
    if d["kind"] != "op":
        return False
    row = get_op(d["op"])
    return row.layout is not None or (row.kind is Kind.ELEMENTWISE and n not in forward)


def split(joint: Graph, n_inputs: int):
    """``(forward, backward, saved, input_reads)`` graphs from a joint graph whose input
    ``n_inputs`` is the upstream gradient and whose output is ``(out, grads...)``."""
    g_in = next(n for n in joint.inputs if joint.node(n)["target"] == n_inputs)
    out_node = joint.node(joint.output)
    out_arg, grad_args = out_node["args"][0], out_node["args"][1:]
    back = _grad_values(joint, g_in)
    import networkx as nx  # noqa: PLC0415

    forward_needs = nx.ancestors(joint.nx, out_arg) | {out_arg}
    memo: dict = {}
    saved, reads, copied = [], [], set()
    todo = [a for n in back if n != g_in for a in joint.node(n)["args"]]
    todo += [a for a in grad_args if a not in back]
    while todo:
        a = todo.pop()
        if a in back or a in copied or a in saved or a in reads:
            continue
        d = joint.node(a)
        if d["kind"] == "input" and d.get("random"):
            saved.append(a)  # this call's draws: the backward uses the forward's mask
        elif d["kind"] == "input":
            reads.append(a)
        elif _recomputable(joint, a, memo, forward_needs):
            copied.add(a)
            todo.extend(d["args"])
        else:
            saved.append(a)
    saved.sort()
    reads.sort(key=lambda n: joint.node(n)["target"])
    fwd_inputs = [n for n in joint.inputs if n != g_in]
    # Ops that may raise on values (an index tensor out of range) run in the forward even
    # when neither the output nor the backward reads them: eager raises there.
    checks = [n for n in joint.order() if n not in back and may_raise_on_values(joint.node(n))]
    forward = _extract(joint, fwd_inputs, [out_arg] + saved, f"{joint.name}.forward",
                       keep_random=True, also=checks)
    backward = _extract(joint, [g_in] + saved + reads, list(grad_args),
                        f"{joint.name}.backward")
    return forward, backward, saved, [joint.node(n)["target"] for n in reads]


def _extract(joint: Graph, inputs: list, outputs: list, name: str,
             keep_random: bool = False, also=()) -> Graph:
    """The part of ``joint`` that computes ``outputs`` (and the nodes ``also``, which the
    new graph keeps without returning them) from ``inputs`` (which become the new graph's
    inputs, in order) and from live state."""
    need = set(outputs) | set(also)
    stop = set(inputs)
    todo = list(outputs) + list(also)
    while todo:
        n = todo.pop()
        if n in stop:
            continue
        for a in joint.node(n)["args"]:
            if a not in need:
                need.add(a)
                todo.append(a)
    g = Graph(name)
    g.grad_enabled = False
    new = {}
    for pos, n in enumerate(inputs):
        d = joint.node(n)
        extra = {k: d[k] for k in ("random", "ref", "source") if k in d and keep_random}
        new[n] = g.add_node("input", shape=d["shape"], dtype=d["dtype"], target=pos,
                            requires_grad=False, device="cpu", **extra)
    for n in joint.order():
        if n not in need or n in new:
            continue
        d = dict(joint.node(n))
        kind, args = d.pop("kind"), d.pop("args")
        if kind in ("output", "input"):
            continue
        shape, dtype = d.pop("shape"), d.pop("dtype")
        d.pop("no_grad", None)
        if kind in ("param", "buffer", "constant") and not d.get("external") and \
                str(d.get("target", "")).startswith("m."):
            d["target"] = d["target"][2:]  # named as in the module itself, not _JointModule
        new[n] = g.add_node(kind, args=[new[a] for a in args], shape=shape, dtype=dtype, **d)
    leaves = [new[n] for n in outputs]
    spec = ("tuple", tuple("T" for _ in leaves))
    first = joint.node(outputs[0]) if outputs else {"shape": (), "dtype": "float32"}
    g.add_node("output", args=leaves, shape=first["shape"], dtype=first["dtype"], spec=spec,
               requires_grad=tuple(False for _ in leaves))
    return g


def _trace_joint(runner):
    """``run(inputs) -> (joint graph, leaves)``: trace the module with its backward; the
    upstream gradient has the output's shape there (a plain trace finds it)."""
    module = _JointModule(runner.module)

    def run(xs):
        plain = trace(runner.module, *xs)
        out = plain.node(plain.node(plain.output)["args"][0])
        g = Tensor._wrap(np.ones(out["shape"], out["dtype"]))
        return trace(module, *xs, g), list(module._leaves)
    return run


def build_joint(runner, args, traced: Graph, optimize):
    """``(forward graph, BatchAnalysis, JointBackward)`` for ``runner``'s module at
    ``args``; raises :class:`NotDifferentiable` (with the reason) when it cannot."""
    out = traced.node(traced.output)
    if out.get("spec", "T") != "T":
        raise NotDifferentiable("forward returns several tensors (their backward replays "
                                "the graph)")
    run = _trace_joint(runner)
    try:
        joint, leaves = run(list(args))
    except (GraphBreak, TraceError) as err:
        raise NotDifferentiable(f"tracing the backward failed: {err}") from None
    n = len(args)
    fwd, bwd, saved, reads = split(joint, n)
    f_opt, b_opt = optimize(fwd), optimize(bwd)
    unused = _unused_saves(b_opt, len(saved))
    f_opt, b_opt = _pruned(f_opt, b_opt, unused, optimize)
    saved = [s for i, s in enumerate(saved) if i not in unused]
    analysis, generic = BatchAnalysis(None, False, "exact"), False
    batch = args[0].shape[0] if args and args[0].ndim else None
    if traced.shape_reads:
        # Sizes read as Python values (`if x.shape[0] > 50:`) may pick other code at
        # another batch size: exact, as analyse_batch decides for the plain forward.
        analysis = BatchAnalysis(None, False, "forward reads tensor sizes as Python values "
                                              f"({traced.shape_reads[0]})")
    elif batch is not None and batch >= MIN_GENERIC_BATCH and all(
            t.ndim and t.shape[0] == batch for t in args):
        try:
            j1, _ = run([_probe(t, PROBES[0]) for t in args])
            j2, _ = run([_probe(t, PROBES[1]) for t in args])
            f1, b1, *_ = split(j1, n)
            f2, b2, *_ = split(j2, n)
            o1, p1 = _pruned(optimize(f1), optimize(b1), unused, optimize)
            o2, p2 = _pruned(optimize(f2), optimize(b2), unused, optimize)
            why = _annotate(o1, o2, *PROBES) or _annotate(p1, p2, *PROBES)
            why = why or _agrees(o1, f_opt, batch) or _agrees(p1, b_opt, batch)
        except Exception as err:  # noqa: BLE001 - any failure means "exact sizes"
            why = f"probing other batch sizes failed: {err}"
        if not why:
            f_opt, b_opt, generic = o1, p1, True
            analysis = BatchAnalysis(o1, True)
        else:
            analysis = BatchAnalysis(None, False, why)
    else:
        analysis = BatchAnalysis(None, False, "batch sizes below 2 are compiled exactly")
    symbols = {}
    if generic:  # the batch size is read from the first input that has it
        source = next((pos for pos, n in enumerate(b_opt.inputs)
                       if b_opt.node(n).get("sym_shape", (None,))[:1] == ("B",)), None)
        if source is None:
            f_opt, b_opt, generic = optimize(fwd), optimize(bwd), False
            f_opt, b_opt = _pruned(f_opt, b_opt, unused, optimize)
            analysis = BatchAnalysis(None, False, "no input of the backward has the batch "
                                                  "size as its first dimension")
        else:
            symbols = {"B": (f"x{source}", 0)}
    try:
        program = lower(b_opt, symbols)
        compiled = default_backend().compile(program)
    except Unsupported as err:
        raise NotDifferentiable(f"the backward cannot be generated: {err}") from None
    nbytes = sum(int(np.prod(joint.node(s)["shape"])) * np.dtype(joint.node(s)["dtype"]).itemsize
                 for s in saved)
    back = JointBackward(compiled, [p.ref for p in program.params],
                         [v for _, v in program.constants], leaves, reads, len(saved),
                         nbytes, b_opt, f_opt, generic)
    return f_opt, analysis, back


def _unused_saves(backward: Graph, n_saved: int) -> set:
    """Indices of saved values the optimized backward no longer reads (simplification
    can drop a use: the forward need not return them)."""
    inputs = backward.inputs
    return {i for i in range(n_saved) if not backward.users(inputs[1 + i])}


def _pruned(forward: Graph, backward: Graph, unused: set, optimize):
    """``forward`` without the saved outputs in ``unused`` (and what only they needed),
    ``backward`` without those inputs (later inputs move up)."""
    if not unused:
        return forward, backward
    forward, backward = forward.copy(), backward.copy()
    out = forward.output
    args = list(forward.node(out)["args"])
    keep = [a for i, a in enumerate(args) if i == 0 or i - 1 not in unused]
    forward.set_args(out, keep)
    d = forward.node(out)
    d["spec"] = ("tuple", tuple("T" for _ in keep))
    d["requires_grad"] = tuple(False for _ in keep)
    inputs = backward.inputs
    gone = {inputs[1 + i] for i in unused}
    for n in gone:
        backward.remove_node(n)
    for pos, n in enumerate(backward.inputs):
        backward.node(n)["target"] = pos
    return optimize(forward), backward


# ---- run time -----------------------------------------------------------------------------

def _grad_op(runner) -> Op:
    op = runner.__dict__.get("_joint_op")
    if op is None:
        op = Op(f"fused_{runner.name}", Kind.OPAQUE, None, None, None, None, _joint_grad,
                f"the compiled backward of {runner.name}", saves=lambda needs: ((), False))
        runner._joint_op = op
    return op


def attach_joint(runner, entry, result, args):
    """The output of a compiled forward-with-saves: a tensor whose ``grad_fn`` runs the
    compiled backward."""
    back = entry.joint
    out = Tensor._wrap(result[0])
    saved_arrays = result[1:]
    out.requires_grad = True
    needs = tuple(bool(t.requires_grad) for t in args)
    # What eager's backward would check: the inputs and parameters it reads must not
    # change in place before backward() (versions), and a second backward without
    # retain_graph must raise (the engine frees this list).
    # An input the compiled backward reads but eager's does not (eager saved values
    # computed from it): a later in-place write into it must neither raise nor change
    # the gradient (fuzz case 1218000666), so the backward reads a copy taken now.
    eager_reads = entry.traced.saved_inputs or (True,) * len(args)
    reads = [args[i]._data if eager_reads[i] else args[i]._data.copy()
             for i in back.input_reads]
    # Version-checked: every input eager's backward reads, whether or not the compiled
    # one does (it may have saved a value computed from it instead).
    saved = tuple((t, t._version[0], f"input {i}") for i, t in enumerate(args)
                  if eager_reads[i])
    saved += tuple((p, p._version[0], f"parameter {j}") for j, p in enumerate(back.params))
    if getattr(entry.traced, "saved_outputs", (False,))[0]:
        # Eager's backward reads this output's storage (a relu's result): writing into it
        # before backward() raises there, so it must here.
        saved += ((out, out._version[0], "output 0"),)
    if not saved:
        # Something for the engine to free (a second backward without retain_graph must
        # raise), which nobody can write into: not the output (case 1206000312: an
        # output zeroed in place, whose gradient needs nothing of it, then raised).
        sentinel = Tensor._wrap(np.empty(0, np.float32))
        saved = ((sentinel, sentinel._version[0], "saved values"),)
    out._ctx = autograd.Node(_grad_op(runner), tuple(args), {"back": back,
                             "arrays": saved_arrays, "reads": reads}, None, saved, needs)
    return out


def warm_backward(back, result, args) -> None:
    """Run the compiled backward once on this call's saves and a gradient of ones, so
    numba compiles it now: a code-generation failure then makes the signature fall back
    (with the reason) instead of surfacing at the user's ``backward()``."""
    want = back.graph.node(back.graph.inputs[0])
    ga = np.ones(np.shape(result[0]), dtype=want["dtype"])
    ins = [ga, *result[1:], *[args[i]._data for i in back.input_reads]]
    back.compiled.call(ins, [p._data for p in back.params] + back.constants)


def _joint_grad(g, *inputs, needs, back, arrays, reads, **_):
    """One native call of the compiled backward; parameter gradients accumulate into
    ``.grad`` here, input gradients go back to the engine."""
    want = back.graph.node(back.graph.inputs[0])["dtype"]
    # Not np.ascontiguousarray: it makes a 0-d gradient (a scalar output's) 1-d.
    ga = g._data.astype(want, copy=False)
    if not ga.flags.c_contiguous:
        ga = ga.copy(order="C")
    ins = [ga, *arrays, *reads]
    tail = [p._data for p in back.params] + back.constants
    res = back.compiled.call(ins, tail)
    if not isinstance(res, tuple):
        res = (res,)
    out = [None] * len(inputs)
    for (kind, what), r in zip(back.leaves, res):
        gt = Tensor._wrap(r)
        if kind == "param":  # through the engine's rule, so post-accumulate hooks run
            autograd.accumulate_grad(what, gt, fresh=True)
        else:
            out[what] = gt
    return tuple(out)
