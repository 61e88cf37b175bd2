"""``trace(module, *example_inputs) -> Graph``: capture a block's forward as data.

Tracing runs the real ``forward`` on the example inputs with a hook installed
in :mod:`fusionnet.dispatch`, so every op-table call is both computed (the
Python code keeps running on real values) and recorded as a graph node.
Ordinary Python — loops over ``self._modules``, submodules, a layer used
twice, helper functions, ``if`` on shapes — simply unrolls.

What the tracer refuses to do is *specialise*: when ``forward`` turns a traced
value into a Python value (``bool()``, ``float()``, ``item()``, ``if t:``,
``while t.sum() > 1:``) or draws random numbers, tracing stops with a
:class:`~fusionnet.graph.GraphBreak` carrying the reason and the source line.
In-place ops (``X /= 2``, ``x[:] = v``) are recorded as pure ops and the
Python variable is rebound to the new node (functionalisation).

Gradients: the trace runs under the caller's grad mode and computes, for every
value, whether eager would make it require grad. Values computed under
``no_grad()`` inside forward are marked ``no_grad`` and ``detach()`` / ``.data``
become ``detach`` nodes, so a backward through the graph stops where eager's does.

Python state: the trace records what ``forward`` read from Python (module
attributes, globals, closures; see :mod:`fusionnet.pystate`) in ``graph.reads`` so
that compiled code can guard it. Tensors that existed before the trace and are
not module state (a global tensor, a tensor inside a list attribute) become
*live* constants read at call time, never copies.
"""
from __future__ import annotations

import linecache
import sys

import numpy as np

from . import autograd, dispatch
from .graph import Graph, GraphBreak
from .ops import DataDependentShape, get_op
from .autograph import ConversionError, ConversionNeeded, Conversions
from .autograph.record import RegionError, RegionTracing, outer_objects, passes_of
from .passes.plan_buffers import view_root
from .pystate import MODULE_INTERNALS, ObjectIndex, Recorder, is_user_frame
from .random import default_generator
from .structure import flatten
from .tensor import Tensor

__all__ = ["trace", "TraceError", "materialise_lazy", "user_source", "Scope"]


class TraceError(RuntimeError):
    """``forward`` did something the tracer cannot represent (e.g. returned a non-tensor)."""


def _freeze(value):
    """Attribute values as hashable plain data (lists become tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def user_source(frame=None) -> str:
    """``file:line: code`` of the innermost frame of user code (``frame`` outwards)."""
    frame = frame or sys._getframe(1)
    while frame is not None and not is_user_frame(frame):
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    fname = frame.f_code.co_filename
    line = linecache.getline(fname, frame.f_lineno).strip()
    return f"{fname}:{frame.f_lineno}: {line}"


class Scope:
    """What the tracer knows about one graph it is building: the root graph, or the body
    of a region (a loop body, a branch) nested in it. Values of an enclosing scope used
    inside a body are *captured*: they become inputs of the body (see ``capture``)."""

    def __init__(self, graph: Graph, parent: "Scope | None" = None, captures=None):
        self.graph = graph
        self.parent = parent
        self.captures = captures                 # a region's shared capture table (bodies)
        self.node_of: dict[int, int] = {}        # id(tensor) or id(array) -> node id
        self.owner_of: dict[int, Tensor] = {}    # id(array) -> the traced tensor holding it
        self.static: set[int] = set()            # nodes whose value can never change
        self.grad: dict[int, bool] = {}          # node -> does eager's value require grad?
        self.live_nodes: dict[tuple, int] = {}
        self.alias: dict[int, tuple] = {}        # id(view) -> (root base, ((op, attrs), ...))
        self.alias_version: dict[int, int] = {}  # id(view) -> base version it was derived at
        self.base_version: dict[int, int] = {}   # id(base) -> in-place writes so far
        self.values: dict[int, object] = {}      # node -> its traced value's array (first bound)


def _scoped(name: str):
    return property(lambda self: getattr(self.scope, name),
                    doc=f"``{name}`` of the scope being traced")


class _Tracer(RegionTracing):
    """The dispatch hook that records ops while ``forward`` runs."""

    graph = _scoped("graph")
    node_of = _scoped("node_of")
    owner_of = _scoped("owner_of")
    static = _scoped("static")
    grad = _scoped("grad")
    live_nodes = _scoped("live_nodes")
    alias = _scoped("alias")
    alias_version = _scoped("alias_version")
    base_version = _scoped("base_version")
    values = _scoped("values")

    def __init__(self, module, graph: Graph, on_break: str, conversions=None,
                 convert: bool = True):
        self.scope = Scope(graph)
        self.conversions = conversions
        self.convert = convert
        self.on_break = on_break
        self.keep: list = []                # keeps traced tensors alive so ids stay unique
        self.live: dict[int, tuple] = {}    # id(array) -> (kind, name, tensor) of module state
        self.inputs: dict[int, bool] = {}   # id of each input forward received -> is it a
                                            # leaf that requires grad (the caller's flag)
        self.saved_for_backward: list = []  # (node, op, label, storage, version) per save
        self.random_taken: dict = {}        # id(generator) -> positions this trace drew
        self.external: ObjectIndex | None = None
        # id(tensor) -> why an in-place write into it is refused: a region result and the
        # outer tensors it may be in eager (autograph/record.py, _note_region_aliases).
        self.region_aliases: dict[int, str] = {}
        self.module = module
        self.module_names = {id(m): name for name, m in module.named_modules()}
        for name, p in module.named_parameters():
            self.live[id(p._data)] = ("param", name, p)
        for name, b in module.named_buffers():
            self.live[id(b._data)] = ("buffer", name, b)
        for mname, m in module.named_modules():
            for attr, v in vars(m).items():
                if isinstance(v, Tensor) and id(v._data) not in self.live:
                    self.live[id(v._data)] = ("constant", f"{mname}.{attr}".lstrip("."), v)

    # ---- where are we? -------------------------------------------------------------------

    def where(self) -> tuple[str, str]:
        """(source line of the user's code, module path) of what is running now."""
        frame = sys._getframe(1)
        source = user_source(frame)
        module = ""
        while frame is not None:
            if frame.f_code.co_name == "forward":
                me = frame.f_locals.get("self")
                if me is not None and id(me) in self.module_names:
                    module = self.module_names[id(me)]
                    break
            frame = frame.f_back
        return source, module

    # ---- nodes for tensors ---------------------------------------------------------------

    def bind(self, t: Tensor, nid: int, by_array: bool = True):
        self.keep.append((t, t._data))  # arrays too: a freed array's id could be reused
        self.node_of[id(t)] = nid
        # The value as it was when bound (an in-place op later rebinds ``t`` to a new node):
        # a backward traced inside the trace reads it (``runtime/joint.py``).
        self.values.setdefault(nid, t._data)
        if by_array:
            self.node_of[id(t._data)] = nid
            self.owner_of[id(t._data)] = t

    def node_for(self, t: Tensor) -> int:
        nid = self.node_of.get(id(t))
        if nid is not None:
            alias = self.alias.get(id(t))
            if alias is not None and self.alias_version.get(id(t)) != self.base_version.get(
                    id(alias[0]), 0):
                return self._rederive(t)  # its base was written through another alias
            return nid
        hit = self.live.get(id(t._data))
        if hit is not None:
            return self._live_node(t, hit)
        nid = self.node_of.get(id(t._data))
        if nid is not None:
            # The array of a traced value under a new Tensor made outside the op table:
            # `detach()` or `.data`. Eager cuts the gradient there, and so must the graph.
            return self._detached(t, nid)
        if self.scope.parent is not None and self._outer_scope_of(t) is not None:
            return self.capture(t, self.scope)
        return self._outside_value(t)

    def on_untracked_alias(self, alias: Tensor, source: Tensor) -> None:
        """``alias = source.detach()`` / ``source.data`` of a traced value: its detach node
        and alias link now, while ``source`` still holds the storage they share (made
        lazily at first use, a write into ``source`` in between was missed)."""
        if id(source._data) in self.live:
            return  # module state: `p.data` is its own param node (see _live_node)
        if id(source) in self.node_of and id(alias) not in self.node_of:
            self._detached(alias, self.node_for(source))

    def _outer_scope_of(self, t: Tensor) -> "Scope | None":
        """The nearest enclosing scope that traced ``t`` (by tensor or by array), if any."""
        scope = self.scope.parent
        while scope is not None:
            if id(t) in scope.node_of or id(t._data) in scope.node_of:
                return scope
            scope = scope.parent
        return None

    def capture(self, t: Tensor, scope: "Scope") -> int:
        """Make ``t``, a value of an enclosing scope, an input of ``scope``'s body (through
        every scope in between); returns its node in ``scope``."""
        nid = scope.node_of.get(id(t))
        if nid is not None:
            return nid
        parent = scope.parent
        if id(t) not in parent.node_of and id(t._data) not in parent.node_of:
            self.capture(t, parent)
        outer = parent.node_of.get(id(t), parent.node_of.get(id(t._data)))
        nid = scope.captures.add(t, outer, scope)
        scope.node_of[id(t)] = nid
        if outer in parent.static:
            scope.static.add(nid)
        scope.grad[nid] = parent.grad.get(outer, False)
        return nid

    def _live_node(self, t: Tensor, hit) -> int:
        """Module state: reference the live tensor, never copy it."""
        kind, name, live = hit
        detach = kind == "param" and t is not live  # `param.data` carries no gradient
        key = (kind, name, detach)
        nid = self.live_nodes.get(key)
        if nid is None:
            source, module = self.where()
            nid = self.graph.add_node(kind, shape=t.shape, dtype=t._data.dtype,
                                      target=name, ref=live, detach=detach,
                                      source=source, module=module)
            self.live_nodes[key] = nid
            self.grad[nid] = bool(live.requires_grad) and not detach
            if kind == "constant":
                self.static.add(nid)
        # Module state is bound by tensor only: `p` and `p.data` share an array
        # but are different nodes (the second carries no gradient).
        self.bind(t, nid, by_array=False)
        return nid

    def _detached(self, t: Tensor, src: int) -> int:
        source, module = self.where()
        d = self.graph.node(src)
        nid = self.graph.add_node("op", op="detach", args=[src], shape=d["shape"],
                                  dtype=d["dtype"], source=source, module=module)
        self.grad[nid] = False
        if src in self.static:
            self.static.add(nid)
        self.bind(t, nid, by_array=False)
        owner = self.owner_of.get(id(t._data))
        if owner is not None and owner is not t:  # writes through it would change the original: refused
            self._note_alias(t, owner, (None, ()))
        return nid

    def _outside_value(self, t: Tensor) -> int:
        """A tensor that is neither traced nor module state: a tensor that existed before
        the trace (a global, a tensor in a list attribute: read live, guarded by
        ``graph.reads``), or one made inside forward or from a Python scalar (a literal)."""
        source, module = self.where()
        path = self._existing_path(t)
        if path is not None:
            nid = self.graph.add_node("constant", shape=t.shape, dtype=t._data.dtype,
                                      target=path, ref=t, external=True, source=source,
                                      module=module)
            self.grad[nid] = bool(t.requires_grad)
        else:
            value = np.array(t._host(), copy=True)
            nid = self.graph.add_node("constant", shape=t.shape, dtype=value.dtype,
                                      target=f"c{self.graph._next_id}", value=value,
                                      source=source, module=module)
            self.grad[nid] = False
        self.static.add(nid)
        self.bind(t, nid)
        return nid

    def _existing_path(self, t: Tensor) -> str | None:
        if self.external is None:
            index = ObjectIndex()
            for mname, m in self.module.named_modules():
                for attr, v in vars(m).items():
                    if attr not in MODULE_INTERNALS:
                        index.add_root(v, f"{mname}.{attr}".lstrip("."))
            self.external = index
        frame = sys._getframe(2)
        while frame is not None:  # the user frames on the stack: their globals, cells
            if is_user_frame(frame):
                code = frame.f_code
                for name in code.co_names:
                    if name in frame.f_globals:
                        self.external.add_root(frame.f_globals[name], f"global {name}")
                for name in code.co_freevars:
                    if name in frame.f_locals:
                        self.external.add_root(frame.f_locals[name], f"closure {name}")
            frame = frame.f_back
        return self.external.find(t) or self.external.find(t._data)

    # ---- dispatch hook protocol ----------------------------------------------------------

    def __call__(self, op, tensors, attrs):
        if op.decompose is not None:  # recorded as the table ops it is made of
            out = op.decompose(*tensors, **attrs)
            nid = self.node_of.get(id(out))
            if nid is not None and self.grad.get(nid) and op.grad is not None:
                # Eager runs the row, whose backward saves what the row says (mse_loss:
                # its inputs), not what the pieces save: a later write into an input
                # must fail the backward as it does there (fuzz case 1224000381).
                self._note_saved(op, nid, tensors, out)
            return out
        args = [self.node_for(t) for t in tensors]
        dynamic = not all(a in self.static for a in args)
        try:
            op.shape(*[t.shape for t in tensors], **attrs)
        except DataDependentShape as err:
            if dynamic:
                self.stop(f"{op.name}: {err}")
        out = dispatch.run_eager(op, tensors, attrs)
        source, module = self.where()
        grad_on = autograd.is_grad_enabled()
        extra = {"no_grad": True} if self.graph.grad_enabled and not grad_on else {}
        nid = self.graph.add_node("op", op=op.name, attrs=_freeze(sorted(attrs.items())),
                                  args=args, shape=out.shape, dtype=out._data.dtype,
                                  source=source, module=module, **extra)
        # What eager would say: recorded only when grad mode is on and an input needs it.
        needs = grad_on and op.grad is not None and out._data.dtype.kind == "f" and any(
            self.grad.get(a, False) for a in args)
        self.grad[nid] = needs
        out.requires_grad = needs
        if not dynamic:
            self.static.add(nid)
        self.bind(out, nid)
        if op.view and len(tensors) == 1 and np.may_share_memory(out._data, tensors[0]._data):
            self._note_alias(out, tensors[0], (op, tuple(attrs.items())))
        if needs:
            self._note_saved(op, nid, tensors, out)
        return out

    # ---- what eager's backward would check -----------------------------------------------

    def _storage(self, t: Tensor) -> int:
        """The id of the root base whose version counter ``t`` shares."""
        return id(self.alias.get(id(t), (t,))[0])

    def _note_saved(self, op, nid: int, tensors, out) -> None:
        """Remember which storages (at which version) this op's gradient will read (in the
        root graph; region bodies are traced once and not checked)."""
        if self.scope.parent is not None:
            return
        flags = tuple(bool(self.grad.get(self.node_of.get(id(t)), False)) for t in tensors)
        inputs, saves_out = op.saves(flags)
        saved = [(f"input {i}", tensors[i]) for i in inputs]
        if saves_out:
            saved.append(("output 0", out))
        for label, t in saved:
            key = self._storage(t)
            self.saved_for_backward.append((nid, op, label, key,
                                            self.base_version.get(key, 0)))

    def _grad_reach(self, graph: Graph) -> set:
        """The nodes a backward from ``graph``'s outputs goes through."""
        reach, todo = set(), [a for a in graph.node(graph.output)["args"]]
        while todo:
            n = todo.pop()
            if n in reach or not self.grad.get(n, False):
                continue
            reach.add(n)
            todo.extend(graph.node(n)["args"])
        return reach

    def saved_outputs(self, graph: Graph, leaves) -> tuple:
        """For each returned tensor, whether the backward reads its storage (relu and exp
        save their result): eager's backward then refuses once the caller writes into it,
        and so must the compiled forward's."""
        reach = self._grad_reach(graph)
        keys = {key for nid, _, _, key, _ in self.saved_for_backward if nid in reach}
        return tuple(self._storage(t) in keys for t in leaves)

    def saved_inputs(self, graph: Graph, inputs) -> tuple:
        """For each input, whether eager's backward reads its storage (an op saved it or
        a view of it): only then does an in-place write into it before ``backward()``
        raise in eager. True throughout where a region body may save it (bodies are not
        checked, see ``_note_saved``)."""
        if graph.regions():
            return (True,) * len(inputs)
        reach = self._grad_reach(graph)
        keys = {key for nid, _, _, key, _ in self.saved_for_backward if nid in reach}
        return tuple(self._storage(t) in keys for t in inputs)

    def backward_error(self, graph: Graph) -> str:
        """Eager's error if a backward from ``graph``'s outputs would meet a saved tensor
        that forward modified in place afterwards; '' if none would."""
        reach = self._grad_reach(graph)
        for nid, op, label, key, version in self.saved_for_backward:
            now = self.base_version.get(key, 0)
            if nid in reach and now != version:
                return ("one of the variables needed for gradient computation has been "
                        f"modified by an inplace operation: {label} of {op.backward_name} is "
                        f"at version {now}; expected version {version} instead")
        return ""

    def _note_alias(self, view: Tensor, src: Tensor, step) -> None:
        """``view`` shares ``src``'s storage: remember its root base and how to get it."""
        base, chain = self.alias.get(id(src), (src, ()))
        self.alias[id(view)] = (base, chain + (step,))
        self.alias_version[id(view)] = self.base_version.get(id(base), 0)

    def on_inplace(self, target: Tensor, result: Tensor):
        """``target op= ...``: rebind ``target`` (and, through views, its base) to pure ops.

        Eager writes into shared storage, so a write through a view changes its base and
        every other view of that base. The graph says the same with the view rows'
        ``write_back`` ops: the base becomes "the old base with the view's elements
        replaced", and the other views are re-derived from it when next used."""
        produced = result
        result = self._like_eager_inplace(target, result)
        base, chain = self.alias.get(id(target), (target, ()))
        why = self.region_aliases.get(id(base)) or self.region_aliases.get(id(target))
        if why:
            self.stop(why)
            return
        if any(op is None for op, _ in chain):
            self.stop("in-place write through detach() or .data of a traced value (eager "
                      "would change the original's storage behind autograd's back)")
            return
        if id(base._data) in self.live or id(target._data) in self.live:
            # Writing module state from forward is a side effect a graph cannot replay.
            self.stop("in-place update of a module parameter/buffer/constant inside forward")
        if id(base) in self.inputs:
            if self.inputs[id(base)] and autograd.is_grad_enabled():
                # Eager's own check, on the caller's flag: an input that did not require
                # grad and was written from a value that does is no leaf any more.
                raise RuntimeError(("a view of a " if target is not base else "a ") +
                                   "leaf Variable that requires grad is being used in an "
                                   "in-place operation.")
            # Eager writes into the caller's tensor; a pure graph does not. Noted so that
            # the runtime can refuse to compile it (the graph itself stays valid).
            self.graph.input_mutations.append(self.where()[0])
        new = self._written_back(base, chain, result)
        if base._data.flags.c_contiguous and not new._data.flags.c_contiguous:
            # Eager writes into the base's own (contiguous) storage: keep its layout, so a
            # later `.view()` of it works as in eager.
            new = dispatch.apply("copy", new)
        base._data = new._data
        base.requires_grad = new.requires_grad
        self.bind(base, self.node_of[id(new)])
        self.base_version[id(base)] = self.base_version.get(id(base), 0) + 1
        self._saved_into(base, {id(produced), id(result), id(new)})
        if target is not base:
            self._rederive(target)

    def _saved_into(self, base: Tensor, results: set) -> None:
        """An op whose backward reads its own result (``relu_``) and that wrote it into
        ``base``: eager saved ``base``'s storage at the version just written, so a later
        in-place write into it must fail the backward (``backward_error``), as there."""
        version = self.base_version[id(base)]
        for i, (nid, op, label, key, _) in enumerate(self.saved_for_backward):
            if key in results:
                self.saved_for_backward[i] = (nid, op, label, id(base), version)

    def _like_eager_inplace(self, target: Tensor, result: Tensor) -> Tensor:
        """Eager's checks and cast: the result must fit the target's shape and is stored
        in the target's dtype."""
        if tuple(result._data.shape) != tuple(target._data.shape):
            raise RuntimeError(f"output with shape {list(target._data.shape)} doesn't match the "
                               f"broadcast shape {list(result._data.shape)}")
        if result._data.dtype != target._data.dtype:
            if not np.can_cast(result._data.dtype, target._data.dtype, casting="same_kind"):
                raise RuntimeError(f"result type {result._data.dtype} can't be cast to the "
                                   f"desired output type {target._data.dtype}")
            result = dispatch.apply("cast", result, dtype=target._data.dtype)
        return result

    def _written_back(self, base: Tensor, chain: tuple, value: Tensor) -> Tensor:
        """``base`` with the view ``chain(base)`` replaced by ``value``, as table ops."""
        parents = [base]
        for op, attrs in chain[:-1]:
            parents.append(dispatch.apply(op.name, parents[-1], **dict(attrs)))
        new = value
        for (op, attrs), parent in zip(reversed(chain), reversed(parents)):
            if op.write_back is None:
                raise RuntimeError(f"unsupported operation: an in-place write into the result "
                                   f"of {op.name} (a read-only view)")
            name, inputs, wattrs = op.write_back(parent, new, **dict(attrs))
            new = dispatch.apply(name, *inputs, **wattrs)
        return new

    def _rederive(self, view: Tensor) -> int:
        """Recompute a view of a base that was written since: ``chain(base)``."""
        base, chain = self.alias[id(view)]
        cur = base
        for op, attrs in chain:  # op None: a detach()/.data alias
            cur = dispatch.apply(op.name if op is not None else "detach", cur, **dict(attrs))
        view._data = cur._data
        view.requires_grad = cur.requires_grad
        nid = self.node_of[id(cur)]
        self.bind(view, nid)
        self.alias_version[id(view)] = self.base_version.get(id(base), 0)
        return nid

    def on_python_value(self, t: Tensor, why: str):
        if not self.is_traced(t):
            return  # not computed from inputs or state: its value is fixed
        frame = sys._getframe(1)
        while frame is not None and not is_user_frame(frame):
            frame = frame.f_back
        fn = self.conversions.function_of(frame.f_code) if frame is not None else None
        if why == "bool()" and fn is not None and self.convert:
            # A `while`/`if` on a tensor in a module's forward: convert it and trace again.
            raise ConversionNeeded(fn, frame.f_lineno)
        hint = "" if why != "bool()" or fn is not None else (
            " (only the forward methods of modules are converted)")
        self.stop(f"{why} needs the value of a traced tensor (data-dependent control flow)"
                  + hint)

    def on_shape_read(self, t: Tensor):
        """Note sizes read by user code (not by fusionnet itself) from traced tensors."""
        if id(t) not in self.node_of and id(t._data) not in self.node_of:
            return
        # Frames: this method <- dispatch.note_shape_read <- Tensor.shape <- the reader.
        reader = sys._getframe(3)
        if not is_user_frame(reader):
            return  # fusionnet's own reads; sizes it bakes in show up in the graph
        self.graph.shape_reads.append(user_source(reader))

    def random_draws(self, gen, xp):
        """What ``rand``/``randn`` draw from while tracing: each draw becomes a random
        input of the graph (drawn from ``gen`` when the compiled code is called, so every
        call has fresh numbers); the trace itself continues on numbers from a copy of
        ``gen``'s stream, which it leaves where it was."""
        return _TracedDraws(self, gen, xp)

    def on_random(self, what: str):
        self.stop(f"{what} inside forward (a traced graph would freeze the values)")

    def stop(self, reason: str):
        source, _ = self.where()
        brk = GraphBreak(reason, source, self.graph)
        if self.on_break == "raise":
            raise brk
        if not any(b.reason == reason and b.source == source for b in self.graph.breaks):
            self.graph.breaks.append(brk)


class _TracedDraws:
    """``random.generator``'s draws during a trace (see ``_Tracer.random_draws``)."""

    def __init__(self, tracer, gen, xp):
        self.tracer, self.gen, self.xp = tracer, gen, xp

    def random(self, size, dtype=np.float64):
        return self._draw("uniform", size, dtype)

    def standard_normal(self, size, dtype=np.float64):
        return self._draw("normal", size, dtype)

    def _draw(self, kind, size, dtype):
        from . import random as _random  # noqa: PLC0415

        tracer = self.tracer
        # A scratch copy of the stream, moved past the draws this trace made already.
        taken = tracer.random_taken.get(id(self.gen), 0)
        scratch = _random.Generator()
        scratch.set_state((self.gen.get_state()[0], self.gen.counter + taken))
        array = _random.draw(scratch, kind, size, dtype)
        tracer.random_taken[id(self.gen)] = (scratch.counter - self.gen.counter) % 2**64
        if tracer.scope.parent is not None or self.xp is not np:
            tracer.stop("random numbers drawn inside a loop or branch body, or on a GPU "
                        "(a compiled loop would draw once)")
            return array
        graph = tracer.graph
        source, module = tracer.where()
        nid = graph.add_node("input", shape=array.shape, dtype=array.dtype,
                             target=len(graph.inputs), requires_grad=False, device="cpu",
                             random=(kind, np.dtype(array.dtype).name), ref=self.gen,
                             source=source, module=module)
        alias = Tensor._wrap(array)
        tracer.bind(alias, nid)
        tracer.grad[nid] = False
        return array


def materialise_lazy(module, inputs):
    """Run lazy modules once eagerly so their parameters exist before tracing.

    It runs as the caller's call would (same grad mode, inputs that require grad as
    theirs do), so it fails where eager's first call fails, before any lazy layer draws
    its weights; but on copies of the inputs, so a forward that writes into its inputs
    does not do so twice."""
    if any(getattr(m, "has_uninitialized_params", lambda: False)() for m in module.modules()):
        copies = []
        for x in inputs:
            if isinstance(x, Tensor):
                c = Tensor._wrap(x._data.copy())
                c.requires_grad = bool(x.requires_grad)
                copies.append(c)
            else:
                copies.append(x)
        module(*copies)


def trace(module, *example_inputs, on_break: str = "raise", name: str | None = None,
          convert: bool = True) -> Graph:
    """Trace ``module(*example_inputs)`` into a :class:`Graph`, under the current grad mode.

    ``on_break="raise"`` (default) raises :class:`GraphBreak` at the first
    data-dependent Python value that cannot be compiled; ``"record"`` notes each break,
    carries on with the concrete value and returns an *incomplete* graph
    (``graph.complete`` is False and ``graph.run`` refuses it) so that ``explain`` can
    list every break. A ``while``/``if`` on a traced tensor inside a module's ``forward``
    is converted into a region instead (``convert=False`` breaks there instead); the
    converted source is in ``graph.converted``.
    """
    from .nn import Module  # noqa: PLC0415 - nn builds on the tensor layer

    if on_break not in ("raise", "record"):
        raise ValueError("on_break must be 'raise' or 'record'")
    for pos, x in enumerate(example_inputs):
        if not isinstance(x, Tensor):
            raise TraceError(f"trace: example input {pos} must be a Tensor, got "
                             f"{type(x).__name__}")
    materialise_lazy(module, example_inputs)  # draws initial weights, as eager's first call
    # A trace must leave the random stream where it found it: a recording trace carries on
    # past a draw (dropout in training mode), and the eager run that follows a break must
    # draw what a plain eager call would.
    rng_state = default_generator.get_state()
    try:
        return _trace_converting(module, example_inputs, on_break, name, convert, Module)
    finally:
        default_generator.set_state(rng_state)


def _trace_converting(module, example_inputs, on_break, name, convert, Module) -> Graph:
    conversions = Conversions(module)
    for _ in range(_MAX_CONVERSIONS):
        try:
            with conversions.installed_forwards(convert):
                return _trace_once(module, example_inputs, on_break, name, conversions,
                                   convert, Module)
        except ConversionNeeded as need:
            conversions.learn(need.fn, need.line)
        except (ConversionError, RegionError) as err:
            return _broken(module, example_inputs, on_break, name, conversions,
                           f"cannot compile data-dependent control flow: {err}", Module)
    return _broken(module, example_inputs, on_break, name, conversions,
                   f"more than {_MAX_CONVERSIONS} statements needed converting", Module)


_MAX_CONVERSIONS = 32


def _broken(module, inputs, on_break, name, conversions, reason, module_class):
    """Trace once more without converting; the first tensor ``bool()`` is a break whose
    reason says why converting failed."""
    graph = Graph(name or type(module).__name__)
    brk = GraphBreak(reason, "", graph)
    if on_break == "raise":
        raise brk
    graph = _trace_once(module, inputs, on_break, name, conversions, False, module_class)
    graph.breaks.insert(0, brk)
    return graph


def _trace_once(module, example_inputs, on_break, name, conversions, convert, module_class):
    graph = Graph(name or type(module).__name__)
    graph.grad_enabled = autograd.is_grad_enabled()
    tracer = _Tracer(module, graph, on_break, conversions, convert)
    inputs = []
    for pos, x in enumerate(example_inputs):
        nid = graph.add_node("input", shape=x.shape, dtype=x._data.dtype, target=pos,
                             device=str(x.device), requires_grad=bool(x.requires_grad))
        # A fresh alias per input: forward may rebind it in place without touching the caller's.
        alias = Tensor._wrap(x._data)
        alias.requires_grad = bool(x.requires_grad)
        tracer.bind(alias, nid)
        tracer.grad[nid] = bool(x.requires_grad)
        tracer.inputs[id(alias)] = bool(x.requires_grad) and x._ctx is None  # a leaf
        inputs.append(alias)
    recorder = Recorder(module_class)
    prev = dispatch.set_trace_hook(tracer)
    try:
        with recorder:
            result = module(*inputs)
        # Still traced: an output that is a view of a base written since is re-derived
        # from the base with recorded ops.
        leaves = _add_output(graph, tracer, result)
    finally:
        dispatch.set_trace_hook(prev)
    graph.reads = recorder
    graph.converted = conversions.sources()
    graph.backward_error = tracer.backward_error(graph)
    graph.saved_outputs = tracer.saved_outputs(graph, leaves)
    graph.saved_inputs = tracer.saved_inputs(graph, inputs)
    return graph


def _add_output(graph: Graph, tracer: _Tracer, result):
    try:
        leaves, spec = flatten(result, lambda v: isinstance(v, Tensor))
    except TypeError as err:
        raise TraceError(f"trace: forward of {graph.name} returned {type(result).__name__}: "
                         f"{err}") from None
    if not leaves:
        raise TraceError(f"trace: forward of {graph.name} returned no tensor "
                         f"({type(result).__name__})")
    args = [tracer.node_for(v) for v in leaves]
    selectors = _select_passthrough(graph, tracer, args)
    graph.add_node("output", args=args + selectors, shape=leaves[0].shape,
                   dtype=leaves[0]._data.dtype, spec=spec, hidden=len(selectors),
                   requires_grad=tuple(tracer.grad.get(a, False) for a in args))
    return leaves


def _select_passthrough(graph: Graph, tracer: _Tracer, args: list) -> list:
    """Eager may return the caller's own input (or module state) through a loop that ran
    no trip or a branch that handed it on unchanged; the compiled code returns a fresh
    value. Returns the *selector* nodes (trip counts, conditions) the driver returns as
    hidden outputs after the leaves, and sets ``graph.selected`` (leaf -> [(conditions
    as (hidden position, when), source)]) so the runtime hands back the object itself.
    Where the code cannot tell (a view of it, a loop body passing a value on),
    ``graph.output_alias`` says why the block runs eagerly."""
    hidden: list = []
    graph.selected, graph.output_alias = {}, ""
    for i, a in enumerate(args):
        if graph.node(view_root(graph, a)[0])["kind"] != "item":
            continue  # plain inputs and views of them: compiler._passthrough / _check_output_views
        for conds, (kind, what), steps in outer_objects(graph, passes_of(graph), a):
            if conds is None or steps:
                label = f"input {what}" if kind == "input" else "module state"
                graph.output_alias = (
                    f"output {i} may be {label} itself{' or a view of it' if steps else ''} "
                    "in eager (a loop or branch hands it on), which the compiled code cannot "
                    "tell apart from a new value")
                continue
            picks = []
            for node, when in conds:
                if node not in hidden:
                    hidden.append(node)
                picks.append((hidden.index(node), when))
            graph.selected.setdefault(i, []).append((tuple(picks), (kind, what)))
    # Regions whose results' requires_grad depends on the trip count or branch: the
    # runtime checks that a call is in the class this trace saw (grad_classes below).
    graph.grad_guards = []
    for selector, spec, taken in getattr(graph, "grad_classes", None) or ():
        if selector not in hidden:
            hidden.append(selector)
        graph.grad_guards.append((hidden.index(selector), spec, taken))
    return hidden
