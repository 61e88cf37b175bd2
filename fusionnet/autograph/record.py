"""Recording ``while`` and ``cond`` regions while tracing (the tracer's half of autograph).

The helpers of converted code hand a statement whose condition is a traced tensor to
:class:`RegionTracing` (mixed into the tracer). Each body is traced once, in a scope of
its own: the statement's state variables become the body's first inputs, and values of
enclosing scopes that the body reads are *captured* as further inputs (shared by the
region's bodies, see :class:`Captures`). The region node then goes into the enclosing
graph, with one ``item`` node per state variable; the trace continues with their
concrete values, computed by running the recorded bodies with the reference interpreter
(so the trace never specialises on how many iterations ran or which branch was taken).

Region shapes (``fusionnet/regions.py`` declares them)::

    while(init..., captures...)   cond:  state, captures -> bool
                                  body:  state, captures -> (new state..., next bool)
    cond(c, state..., captures...) then, else:  state, captures -> new state

A loop body also computes the next condition (a do-while rotation): one pass over the
body and the following test lets the optimizer fuse the two (``X /= 2`` and the next
``X.abs().sum()`` become one kernel).
"""
from __future__ import annotations

import numpy as np

from .. import autograd, dispatch
from ..graph import Graph
from ..passes.plan_buffers import view_root
from .helpers import UNDEFINED, Undefined

__all__ = ["RegionTracing", "Captures", "RegionError", "outer_objects", "passes_of",
           "trips_lead_to"]


class RegionError(RuntimeError):
    """A tensor-dependent statement cannot become a region (the message says why)."""


class Captures:
    """The values of enclosing scopes a region's bodies read, in first-use order. Each
    body gets an input for each (``target`` = state count + index)."""

    def __init__(self, first_target: int):
        self.first = first_target
        self.tensors: list = []   # the outer tensors
        self.outer: list = []     # their node ids in the enclosing scope
        self.by_id: dict = {}
        self.bodies: list = []    # scopes that use this table

    def add(self, t, outer_nid: int, scope) -> int:
        """The input node of ``scope``'s body for ``t`` (created on first use)."""
        index = self.by_id.get(id(t))
        if index is None:
            index = len(self.tensors)
            self.by_id[id(t)] = index
            self.tensors.append(t)
            self.outer.append(outer_nid)
        return _body_input(scope, self.first + index, t)


def _body_input(scope, target: int, t) -> int:
    g = scope.graph
    for n in g.inputs:
        if g.node(n)["target"] == target:
            return n
    return g.add_node("input", shape=t._data.shape, dtype=t._data.dtype, target=target)


def _sources(g: Graph, nid: int) -> set:
    """The input targets (state, then captures) that body value ``nid`` may be or view:
    through ops that may return their first input or a view of it, and through the
    results of nested regions that may hand an input on (:func:`outer_objects`)."""
    return {what for _, (kind, what), _ in outer_objects(g, passes_of(g), nid)
            if kind == "input"}


def passes_of(g: Graph) -> dict:
    """Which region results of ``g`` may be which of its values in eager (filled while
    tracing by ``RegionTracing._note_passthrough``)."""
    table = getattr(g, "passes_through", None)
    if table is None:
        table = g.passes_through = {}
    return table


def _state_ref(d) -> bool:
    """Whether node data ``d`` is module state eager hands back as the object itself."""
    return "ref" in d and not d.get("detach") and not d.get("external")


def outer_objects(graph: Graph, passes: dict, nid: int) -> list:
    """The caller's objects eager's value of root-graph node ``nid`` may *be*: a list of
    ``(conditions, (kind, what), view steps)``, ``kind`` "input" (``what`` its position)
    or "ref" (``what`` the module's tensor). ``conditions`` is a tuple of
    ``(selector node, when)`` that all hold exactly when it is that object (a loop's trip
    count is 0, a branch was taken; ``passes`` says which region results pass what
    through, see ``RegionTracing._note_passthrough``; :func:`passes_of`), or None where
    the compiled code cannot tell (a loop body handing a value on unchanged)."""
    root, steps = view_root(graph, nid)
    d = graph.node(root)
    if d["kind"] == "input":
        return [((), ("input", d["target"]), steps)]
    if _state_ref(d):
        return [((), ("ref", d["ref"]), steps)]
    found = []
    for source, selector, when in passes.get(root, ()):
        if isinstance(source, tuple):  # module state a body returns: ("ref", tensor)
            found.append((None, source, steps))
            continue
        for conds, what, more in outer_objects(graph, passes, source):
            both = None if selector is None or conds is None else ((selector, when),) + conds
            found.append((both, what, steps + more))
    return found


def _reachable(body_map: tuple, k: int) -> list:
    """The initial states and captures loop result ``k`` may be (``body_map``: what each
    body result hands on, see ``_note_passthrough``)."""
    found, cur, seen = [("state", k)], k, {k}
    while body_map[cur] is not None:
        step = body_map[cur]
        if step[0] == "capture":
            found.append(step)
            break
        cur = step[1]
        if cur in seen:
            break
        seen.add(cur)
        found.append(("state", cur))
    return found


def trips_lead_to(body_map: tuple, k: int, trips: int):
    """What loop result ``k`` is after ``trips`` trips: ``("state", j)`` (the initial
    value of state ``j``), ``("capture", c)``, or None (a value a trip computed).
    Walks the body's hand-ons backwards; a cycle of pure hand-ons is walked modulo its
    length, so a long loop costs no more than a short one."""
    cur, step, first = k, 0, {k: 0}
    while step < trips:
        nxt = body_map[cur]
        if nxt is None or nxt[0] == "capture":
            return nxt
        cur, step = nxt[1], step + 1
        if cur in first:  # a cycle: only the remainder matters
            length = step - first[cur]
            for _ in range((trips - step) % length):
                cur = body_map[cur][1]
            return ("state", cur)
        first[cur] = step
    return ("state", cur)


def grad_flow(body: Graph, in_flags: tuple) -> tuple:
    """Which results of ``body`` require grad in eager when its inputs (by ``target``) do
    as ``in_flags``: the tracer's own rule (an op with a gradient, of a float dtype, not
    under ``no_grad``, whose argument requires grad; module state that requires grad),
    replayed over the recorded body. A nested region's results follow the tracer's
    coarse rule (any argument, or any parameter its bodies read)."""
    from ..ops import get_op  # noqa: PLC0415
    from ..regions import bodies_of, region_of  # noqa: PLC0415

    out = body.node(body.output)["args"]
    if not body.grad_enabled:
        return (False,) * len(out)
    flags: dict = {}
    for n in body.order():
        d = body.node(n)
        kind = d["kind"]
        if kind == "output":
            continue
        if kind == "input":
            f = bool(in_flags[d["target"]])
        elif "ref" in d:
            f = bool(d["ref"].requires_grad) and not d.get("detach")
        elif kind == "op":
            f = (not d.get("no_grad") and get_op(d["op"]).grad is not None and
                 np.dtype(d["dtype"]).kind == "f" and any(flags[a] for a in d["args"]))
        elif kind == "item":
            f = np.dtype(d["dtype"]).kind == "f" and flags[d["args"][0]]
        elif region_of(d) is not None:
            f = any(flags[a] for a in d["args"]) or any(
                "ref" in b.node(m) and not b.node(m).get("detach") and
                bool(b.node(m)["ref"].requires_grad)
                for _, b in bodies_of(d) for m in b.order())
        else:
            f = False
        flags[n] = f
    return tuple(flags[a] for a in out)


def _loop_grad_classes(body: Graph, init: tuple, caps: tuple):
    """``requires_grad`` of a loop's results after 0, 1, 2... trips: ``(classes, start)``,
    the flags for trip counts ``0..len(classes)-1``, then repeating from ``start`` (the
    flags after a trip depend only on those before it, so they cycle)."""
    classes, seen = [init], {init: 0}
    while True:
        nxt = grad_flow(body, classes[-1] + caps)[:len(init)]
        if nxt in seen:
            return tuple(classes), seen[nxt]
        seen[nxt] = len(classes)
        classes.append(nxt)


def grad_class(classes: tuple, start: int, trips: int) -> tuple:
    """The flags of :func:`_loop_grad_classes` after ``trips`` trips."""
    if trips < len(classes):
        return classes[trips]
    return classes[start + (trips - start) % (len(classes) - start)]


def _as_tensor(value, name: str):
    """A state value as a tensor: tensors as they are, Python numbers as 0-d tensors (a
    loop counter becomes a value of the loop); anything else cannot be carried."""
    from ..tensor import Tensor  # noqa: PLC0415 - tensor imports dispatch

    if isinstance(value, Tensor):
        return value
    if isinstance(value, bool):
        return Tensor._wrap(np.array(value))
    if isinstance(value, int):
        return Tensor._wrap(np.array(value, dtype=np.int64))
    if isinstance(value, float):
        return Tensor._wrap(np.array(value, dtype=np.float32))
    raise RegionError(f"variable {name!r} holds a {type(value).__name__}, which a "
                      "tensor-dependent loop or branch cannot carry (only tensors and Python "
                      "numbers)")


def _at_line(source: str, line) -> str:
    """``source`` (``file:line: code``) moved to ``line`` of the same file: a region is
    attributed to its statement, not to where the trace happened to be."""
    import linecache  # noqa: PLC0415
    import re  # noqa: PLC0415

    match = re.match(r"^(.*?):(\d+): ", source)
    if line is None or not match:
        return source
    fname = match.group(1)
    return f"{fname}:{line}: {linecache.getline(fname, line).strip()}"


class RegionTracing:
    """The tracer methods behind ``while_stmt`` / ``if_stmt`` on traced conditions."""

    # ---- what is traced -------------------------------------------------------------------

    def is_traced(self, value) -> bool:
        """Whether ``value`` is a tensor computed (in any open scope) from traced inputs."""
        from ..tensor import Tensor  # noqa: PLC0415

        if not isinstance(value, Tensor):
            return False
        scope = self.scope
        while scope is not None:
            nid = scope.node_of.get(id(value), scope.node_of.get(id(value._data)))
            if nid is not None:
                return nid not in scope.static
            scope = scope.parent
        return False

    # ---- bodies ---------------------------------------------------------------------------

    def _body(self, name: str, state: list, captures: Captures, fn, args_of):
        """Trace ``fn`` as a body graph: ``state`` tensors become inputs 0..k-1; returns
        (scope, outputs of fn)."""
        from ..tensor import Tensor  # noqa: PLC0415
        from ..tracer import Scope  # noqa: PLC0415

        g = Graph(f"{self.scope.graph.name}.{name}")
        g.grad_enabled = self.scope.graph.grad_enabled
        scope = Scope(g, parent=self.scope, captures=captures)
        captures.bodies.append(scope)
        placeholders = []
        for i, t in enumerate(state):
            nid = g.add_node("input", shape=t._data.shape, dtype=t._data.dtype, target=i)
            p = Tensor._wrap(t._data.copy())
            p.requires_grad = bool(t.requires_grad)
            scope.node_of[id(p)] = nid
            scope.node_of[id(p._data)] = nid
            scope.owner_of[id(p._data)] = p
            scope.grad[nid] = bool(t.requires_grad)
            self.keep.append((p, p._data))
            placeholders.append(p)
        scope.placeholders = placeholders
        outer = self.scope
        self.scope = scope
        try:
            out = fn(*args_of(placeholders))
        finally:
            self.scope = outer
        return scope, out

    def _finish_body(self, scope, outs: list, spec_names) -> None:
        """Give a body its output node (one leaf per value in ``outs``)."""
        outer = self.scope
        self.scope = scope
        try:
            nids = [self.node_for(t) for t in outs]
        finally:
            self.scope = outer
        g = scope.graph
        first = outs[0] if outs else None
        g.add_node("output", args=nids, shape=first._data.shape if first is not None else (),
                   dtype=first._data.dtype if first is not None else "bool",
                   spec=("tuple", ("T",) * len(nids)),
                   requires_grad=tuple(scope.grad.get(n, False) for n in nids))

    def _complete_inputs(self, captures: Captures) -> None:
        """Every body of a region takes every capture (unused ones stay unread)."""
        for scope in captures.bodies:
            for i, t in enumerate(captures.tensors):
                _body_input(scope, captures.first + i, t)

    # ---- while ---------------------------------------------------------------------------

    def while_region(self, cond, body, state, names, first_cond, line=None):
        """Record ``while cond(*state): state = body(*state)`` as a ``while`` region."""
        carried = [i for i, v in enumerate(state) if not isinstance(v, Undefined)]
        values = [_as_tensor(state[i], names[i]) for i in carried]
        # A loop that runs no trip returns its initial values themselves: where one is
        # the caller's input or module state, a hidden trip count says which it was.
        # ...and whether a result requires grad may depend on the trip count (a loop that
        # runs no trip returns its initial value, which may not): the count says which.
        counted = self._starts_from_caller(values) or (
            self.scope.parent is None and autograd.is_grad_enabled()
            and self.graph.grad_enabled)
        if counted:
            values.append(_as_tensor(0, "the trip count"))
        captures = Captures(len(values))

        def args_of(placeholders):
            args = list(state)
            for i, p in zip(carried, placeholders):
                args[i] = p
            return args

        def test_of(out, where):
            c = out if hasattr(out, "_data") else _as_tensor(out, "the condition")
            if c._data.size != 1:
                raise RuntimeError(f"Boolean value of Tensor with more than one value is "
                                   f"ambiguous (the {where} of the loop at line {line})")
            c = c.reshape(()) if c._data.ndim else c
            return c if c._data.dtype.kind == "b" else c != 0

        cond_scope, c = self._body("cond", values, captures, cond, args_of)
        c = self._in(cond_scope, lambda: test_of(c, "condition"))
        self._finish_body(cond_scope, [c], None)

        def step(*args):
            new = list(body(*args))
            new_state = [self._carry(new[i], values[k], names[i], line)
                         for k, i in enumerate(carried)]
            for i, v in enumerate(new):
                if i not in carried and not isinstance(v, Undefined) and \
                        not self._same_python(v, state[i]):
                    raise RegionError(f"variable {names[i]!r} is first bound inside the "
                                      f"tensor-dependent loop at line {line}; bind it before "
                                      "the loop")
            full = list(args)
            for k, i in enumerate(carried):
                full[i] = new_state[k]
            nxt = test_of(cond(*full), "condition")
            if counted:
                new_state.append(self.scope.placeholders[-1] + 1)
            return new_state, nxt

        body_scope, (new_state, nxt) = self._body("body", values, captures, step, args_of)
        self._finish_body(body_scope, list(new_state) + [nxt], None)
        self._complete_inputs(captures)
        results, trips = self._run_while(cond_scope.graph, body_scope.graph, values, captures)
        outs = self._region_node("while", values, captures, results,
                                 cond=cond_scope.graph, body=body_scope.graph, line=line,
                                 counted=counted, taken=trips)
        new = list(state)
        for i, t in zip(carried, outs):
            new[i] = t
        return tuple(new)

    def _carry(self, value, like, name, line):
        t = _as_tensor(value, name)
        if tuple(t._data.shape) != tuple(like._data.shape) or t._data.dtype != like._data.dtype:
            if t._data.dtype != like._data.dtype and tuple(t._data.shape) == tuple(
                    like._data.shape) and np.can_cast(t._data.dtype, like._data.dtype,
                                                      casting="same_kind"):
                return t.to(like.dtype)  # a Python counter that became float stays its dtype
            raise RegionError(f"loop variable {name!r} changes from {tuple(like.shape)} "
                              f"{like._data.dtype} to {tuple(t.shape)} {t._data.dtype} in the "
                              f"tensor-dependent loop at line {line}; a compiled loop keeps "
                              "each variable's shape and dtype")
        return t

    @staticmethod
    def _same_python(a, b) -> bool:
        try:
            return a is b or bool(a == b)
        except Exception:  # noqa: BLE001
            return False

    def _in(self, scope, fn):
        outer = self.scope
        self.scope = scope
        try:
            return fn()
        finally:
            self.scope = outer

    def _run_while(self, cond_g, body_g, values, captures):
        """The loop's concrete result and trip count, from the recorded bodies (no
        specialising)."""
        from ..interpreter import run  # noqa: PLC0415

        caps = list(captures.tensors)
        prev = dispatch.set_trace_hook(None)
        try:
            with autograd.no_grad():
                state = [v.detach() for v in values]
                (c,) = run(cond_g, *state, *caps)
                trips = 0
                while bool(c):
                    out = run(body_g, *state, *caps)
                    state, c = list(out[:-1]), out[-1]
                    trips += 1
        finally:
            dispatch.set_trace_hook(prev)
        return state, trips

    # ---- cond ----------------------------------------------------------------------------

    def cond_region(self, c, then, orelse, state, names, line=None):
        """Record ``then(*state) if c else orelse(*state)`` as a ``cond`` region."""
        c = c if c._data.dtype.kind == "b" else (c != 0)
        if c._data.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with more than one value is ambiguous "
                               f"(the condition at line {line})")
        c = c.reshape(()) if c._data.ndim else c
        carried = [i for i, v in enumerate(state) if not isinstance(v, Undefined)]
        values = [_as_tensor(state[i], names[i]) for i in carried]
        captures = Captures(len(values))  # body inputs: state, then captures (after `c`)

        def args_of(placeholders):
            args = list(state)
            for i, p in zip(carried, placeholders):
                args[i] = p
            return args

        branches = {}
        for which, fn in (("then", then), ("else", orelse)):
            scope, out = self._body(which, values, captures, fn, args_of)
            branches[which] = (scope, list(out))
        outs = {}
        for i, name in enumerate(names) if names else ():
            got = [branches[w][1][i] for w in ("then", "else")]
            if any(isinstance(v, Undefined) for v in got):
                if all(isinstance(v, Undefined) for v in got):
                    continue
                raise RegionError(f"variable {name!r} is assigned in only one branch of the "
                                  f"tensor-dependent `if` at line {line}; assign it before "
                                  "the `if` or in both branches")
            outs[i] = got
        if not names:  # a conditional expression: one value
            got = [branches[w][1][0] for w in ("then", "else")]
            outs[0] = got
        order = sorted(outs)
        leaves = {}
        for w, k in (("then", 0), ("else", 1)):
            scope, _ = branches[w]
            leaves[w] = [self._in(scope, lambda i=i: _as_tensor(outs[i][k], names[i] if names
                                                                 else "the value"))
                         for i in order]
        for a, b, i in zip(leaves["then"], leaves["else"], order):
            if tuple(a.shape) != tuple(b.shape) or a._data.dtype != b._data.dtype:
                label = names[i] if names else "the value"
                raise RegionError(f"{label!r} is {tuple(a.shape)} {a._data.dtype} in one branch "
                                  f"and {tuple(b.shape)} {b._data.dtype} in the other of the "
                                  f"tensor-dependent `if` at line {line}")
        for w in ("then", "else"):
            self._finish_body(branches[w][0], leaves[w], None)
        self._complete_inputs(captures)
        taken = leaves["then"] if bool(c._data) else leaves["else"]
        results = [t.detach() for t in taken]
        nodes = self._region_node("cond", values, captures, results, then=branches["then"][0]
                                  .graph, line=line, cond_value=c, taken=bool(c._data),
                                  **{"else": branches["else"][0].graph})
        new = list(state) if names else [None]
        for i, t in zip(order, nodes):
            new[i] = t
        return tuple(new)

    # ---- the region node -----------------------------------------------------------------

    def _starts_from_caller(self, values) -> bool:
        """Whether a root-graph region starts from a value that may be the caller's own
        input or module state (so a result may be that object itself)."""
        return self.scope.parent is None and any(
            c is not None and not steps for v in values
            for c, _, steps in outer_objects(self.graph, passes_of(self.graph),
                                             self.node_for(v)))

    def _region_node(self, kind, values, captures, results, line=None, cond_value=None,
                     counted=False, taken=None, **bodies):
        """Add the region and its ``item`` nodes to the current graph; return tensors for
        the items, holding ``results`` (the concrete values)."""
        from ..tensor import Tensor  # noqa: PLC0415

        args = ([self.node_for(cond_value)] if cond_value is not None else []) + \
            [self.node_for(v) for v in values] + list(captures.outer)
        source, module = self.where()
        source = _at_line(source, line)
        g = self.graph
        grad_on = autograd.is_grad_enabled()
        # A parameter read inside a body (not captured: module state is referenced where
        # it is used) makes the results require grad too, as eager's would.
        needs = grad_on and (any(self.grad.get(a, False) for a in args) or any(
            body.node(m)["kind"] == "param" and not body.node(m).get("detach") and
            body.node(m)["ref"].requires_grad
            for body in bodies.values() for m in body.order()))
        shapes = tuple((tuple(r._data.shape), str(r._data.dtype)) for r in results)
        rid = g.add_node(kind, args=args, shape=(), dtype="bool", outs=shapes, source=source,
                         module=module, **bodies)
        self.grad[rid] = needs
        flags = self._result_grads(kind, args, len(values), bodies, taken, needs, results)
        outs = []
        for k, r in enumerate(results):
            nid = g.add_node("item", args=[rid], shape=r._data.shape, dtype=r._data.dtype,
                             target=k)
            t = Tensor._wrap(np.array(r._data, copy=True))
            t.requires_grad = flags[k] and r._data.dtype.kind == "f"
            self.grad[nid] = t.requires_grad
            self.bind(t, nid)
            outs.append(t)
        self._note_region_aliases(kind, outs, values, captures, bodies, source)
        items = [self.node_for(t) for t in outs]
        self._note_passthrough(kind, args, items, bodies, counted)
        self._note_grad_classes(kind, args, items, counted, taken)
        return outs

    def _result_grads(self, kind, args, n_state, bodies, taken, needs, results) -> tuple:
        """Whether each result requires grad in eager after this trace's trip count or
        branch (``taken``): per result, from the bodies (:func:`grad_flow`). Also keeps,
        for :meth:`_note_grad_classes`, what they would be for other counts or branches."""
        self._grad_classes = None
        if not needs or taken is None:
            return (needs,) * len(results)
        first = 1 if kind == "cond" else 0
        state = tuple(bool(self.grad.get(a, False)) for a in args[first:first + n_state])
        caps = tuple(bool(self.grad.get(a, False)) for a in args[first + n_state:])
        if kind == "while":
            classes, start = _loop_grad_classes(bodies["body"], state, caps)
            self._grad_classes = ("trips", classes, start)
            return grad_class(classes, start, taken)
        then, orelse = (grad_flow(bodies[w], state + caps) for w in ("then", "else"))
        self._grad_classes = ("branch", then, orelse)
        return then if taken else orelse

    def _note_grad_classes(self, kind, args, items, counted, taken) -> None:
        """A root-graph region whose results' ``requires_grad`` differs between trip
        counts or branches: the trace went on with this call's (``taken``); the compiled
        code holds for calls in the same class only, which the runtime checks from the
        hidden trip count or condition (``graph.grad_classes``, tracer.py)."""
        spec, self._grad_classes = self._grad_classes, None
        if spec is None or self.scope.parent is not None:
            return
        if spec[0] == "trips":
            classes, start = spec[1], spec[2]
            if len(set(classes)) == 1 or not counted:
                if len(set(classes)) > 1:  # no count to check it by: cannot compile
                    raise RegionError("whether the loop's results require grad depends on "
                                      "its trip count")
                return
            selector = items[-1]
        else:
            if spec[1] == spec[2]:
                return
            selector = args[0]
        grad_classes = getattr(self.graph, "grad_classes", None)
        if grad_classes is None:
            grad_classes = self.graph.grad_classes = []
        grad_classes.append((selector, spec, taken))

    def _note_passthrough(self, kind, args, items, bodies, counted) -> None:
        """Which outer value each result of a region may be in eager, and when
        (:func:`passes_of` the enclosing graph, read by :func:`outer_objects`).

        A ``cond`` result is a branch's input returned unchanged when that branch is
        taken. A ``while`` result after ``t`` trips is found by walking the body's
        hand-ons back ``t`` steps (``a, b = f(b), a``: after one trip ``b`` is the
        initial ``a``), :func:`trips_lead_to`; the hidden trip count (the last result,
        root graph only) says ``t``. What a body hands on any other way (a view, a
        nested region's result) has no selector."""
        first = 1 if kind == "cond" else 0  # a cond's first argument is its condition
        table = passes_of(self.graph)
        n_state = len(items)
        hands_on = {}  # body -> per result: ("state", j) / ("capture", c) / None (fresh)
        for name, body in bodies.items():
            if name == "cond":
                continue
            row = []
            for k in range(n_state):
                leaf = body.node(body.output)["args"][k]
                root, steps = view_root(body, leaf)
                d = body.node(root)
                t = d.get("target", -1) if d["kind"] == "input" and not steps else -1
                row.append(None if t < 0 else ("state", t) if t < n_state else
                           ("capture", t - n_state))
            hands_on[name] = tuple(row)
        for k, item in enumerate(items[:-1] if counted else items):
            found = []
            if kind == "while" and counted:
                body_map = hands_on["body"]
                for target in _reachable(body_map, k):
                    source = args[target[1]] if target[0] == "state" else \
                        args[n_state + target[1]]
                    found.append((source, items[-1], ("walk", k, target, body_map)))
            elif kind == "while":
                found.append((args[k], None, "zero"))
            for name, body in bodies.items():
                if name == "cond":
                    continue
                leaf = body.node(body.output)["args"][k]
                exact = hands_on[name][k] is not None
                if exact and kind == "while" and counted:
                    continue  # the walk above covers it
                for _, (what_kind, what), _ in outer_objects(body, passes_of(body), leaf):
                    source = args[first + what] if what_kind == "input" else ("ref", what)
                    found.append((source, args[0] if exact else None, name))
            if found:
                table[item] = found

    def _note_region_aliases(self, kind, outs, values, captures, bodies, source) -> None:
        """Remember which outer tensors each result may *be* in eager: a loop that runs no
        trip returns its initial values themselves, and a body may return one of its
        inputs (or a view of it) unchanged. The graph's results are fresh values, so an
        in-place write into either side of such a pair (``on_inplace``) would change both
        in eager but one in the graph: the tracer refuses it (``region_aliases``)."""
        outer = list(values) + list(captures.tensors)
        for k, t in enumerate(outs):
            found = [values[k]] if kind == "while" else []
            for name, body in bodies.items():
                if name != "cond":
                    leaf = body.node(body.output)["args"][k]
                    found += [outer[i] for i in _sources(body, leaf) if i < len(outer)]
            if found or kind == "while":
                same = ("a loop that runs no trip returns its initial value" if kind ==
                        "while" else "a branch that returns a value unchanged returns it")
                why = (f"in-place write into a result of the tensor-dependent {kind} at "
                       f"{source or 'its line'}, or into a value that result may be (in "
                       f"eager {same} itself, so the write would change both; the compiled "
                       "graph keeps them apart)")
                self.region_aliases[id(t)] = why
                for o in found:
                    # A view's base too: a write into the base changes the view in eager.
                    base, _ = self.alias.get(id(o), (o, ()))
                    for x in (o, base):
                        self.region_aliases.setdefault(id(x), why)
                        self.keep.append((x, x._data))
