"""Tracing a training step: what ``fuse(step)`` finds, feeds and records (``step.py``).

* :func:`find_state`: the modules and optimisers a step function names;
* :class:`StepModule`: the module the step is traced as (its children are those
  modules, so parameters are the trace's live state);
* :class:`Plan`: the optimisers' runtime inputs (scalars such as ``lr`` and the bias
  corrections, state tensors such as momentum buffers), built per call;
* the hooks installed while tracing (:class:`Tracing`): ``loss.backward()`` records the
  backward into the trace (``joint.backward_in_trace``) and sets each parameter's
  ``.grad`` to its traced gradient; ``opt.step()`` records the update (``updates.py``).
"""
from __future__ import annotations

import threading
import types

import numpy as np

from .. import autograd, dispatch
from ..nn import Module
from ..optim.optimizer import TRACING, Optimizer
from ..tensor import Tensor
from .joint import NotDifferentiable, backward_in_trace, leaf_of, mark_phase
from .updates import rule_for

__all__ = ["NotCompilable", "find_state", "StepModule", "Plan", "Trace", "Tracing"]


class NotCompilable(Exception):
    """The step cannot be compiled (the reason); it runs eagerly."""


def find_state(fn) -> tuple[list, list]:
    """The modules and optimisers ``fn`` refers to by name (globals, closure cells,
    default arguments and the object of a bound method, and so on through the plain
    functions, lists, tuples and dicts it names, a few levels deep), in first-seen
    order; submodules of another found module are left out (their parameters come
    with it)."""
    modules, opts, seen = [], [], set()

    def visit(objects, depth):
        for obj in objects:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, Module):
                modules.append(obj)
            elif isinstance(obj, Optimizer):
                opts.append(obj)
            elif depth >= 3:
                continue
            elif isinstance(obj, (types.FunctionType, types.MethodType)) and \
                    not getattr(obj, "__module__", "").startswith("fusionnet"):
                visit(_named_by(obj), depth + 1)
            elif type(obj) in (list, tuple):  # `opts[0]`, `models = [net, ema]`
                visit(obj, depth + 1)
            elif type(obj) is dict:
                visit(obj.values(), depth + 1)

    visit(_named_by(fn), 0)
    inner = {id(m) for top in modules for m in top.modules() if m is not top}
    return [m for m in modules if id(m) not in inner], opts


def _named_by(fn) -> list:
    """The objects ``fn``'s code can reach by name: globals, cells, defaults, self."""
    if isinstance(fn, types.MethodType):
        return [fn.__self__] + _named_by(fn.__func__)
    code = getattr(fn, "__code__", None)
    if code is None:
        return []
    found = [fn.__globals__[n] for n in code.co_names if n in fn.__globals__]
    for cell in fn.__closure__ or ():
        try:
            found.append(cell.cell_contents)
        except ValueError:  # an empty cell
            pass
    found.extend(fn.__defaults__ or ())
    found.extend((fn.__kwdefaults__ or {}).values())
    return found


class _Context(threading.local):
    """The step being traced in this thread (None outside a trace)."""

    current = None


_CTX = _Context()


class Trace:
    """What one trace of a step collects: the extra inputs, the values to write back."""

    def __init__(self, plan, n_user: int):
        self.plan = plan
        self.n_user = n_user
        self.extras: dict = {}
        self.user: list = []
        self.writes: list = []        # (what, target...) per extra output
        self.values: list = []        # the traced value of each write
        self.grad_params: list = []

    def write(self, what, value) -> None:
        self.writes.append(what)
        self.values.append(value)


class StepModule(Module):
    """The module a step function is traced as: its children are the modules the
    function uses (so their parameters are the trace's live state)."""

    def __init__(self, fn, modules):
        super().__init__()
        object.__setattr__(self, "_step_fn", fn)
        for i, m in enumerate(modules):
            self.add_module(f"m{i}", m)

    def forward(self, *args):
        """Run the step on traced inputs; returns (its result, the values to write back)."""
        ctx = _CTX.current
        ctx.user = list(args[:ctx.n_user])
        ctx.extras = dict(zip(ctx.plan.extra_keys, args[ctx.n_user:]))
        result = self._step_fn(*ctx.user)
        return result, tuple(ctx.values)


# ---- the optimiser plan: runtime scalars and state, per call ------------------------------


class Plan:
    """Which optimiser scalars and state tensors feed the compiled step, and in which
    order; ``prepare()`` builds them for the call about to run."""

    def __init__(self, opts):
        self.opts = opts
        self.extra_keys: list = []     # ("scalar", set, name) | ("state", id(p), name)
        self.scalar_of: dict = {}      # id(p) -> the key of its set of scalars
        self.recipe = None             # what prepare() reads, once it has walked the state
        self.advances: list = []
        self.key = self._structure()

    def _structure(self) -> tuple:
        key = []
        for opt in self.opts:
            rule = rule_for(opt)
            if rule is None:
                raise NotCompilable(f"{type(opt).__name__} has no compiled update (SGD, Adam "
                                    "and AdamW do)")
            for gi, group in enumerate(opt.param_groups):
                steps: list = []
                for p in group["params"]:
                    state = opt.state.get(p, {})
                    # Which set of scalars the parameter reads (params of one group, dtype
                    # and step count share one) is part of the driver's signature too; the
                    # step count itself is a runtime value.
                    step = (p._data.dtype.str, state.get("step"))
                    if step not in steps:
                        steps.append(step)
                    sset = (gi, steps.index(step))
                    key.append((id(p), p.requires_grad, rule.structure(group, state),
                                rule.state_names(group, state), sset))
        return tuple(key)

    def quick(self) -> tuple:
        """What can change the full key without this runtime noticing: the state dicts
        replaced or grown, a group's settings, a parameter's ``requires_grad``."""
        out = []
        for opt in self.opts:
            rule = rule_for(opt)
            out.append((id(opt.state), len(opt.state), len(opt.param_groups)))
            for group in opt.param_groups:
                out.append(rule.structure(group, {}))
                out.append(tuple(p.requires_grad for p in group["params"]))
        return tuple(out)

    def prepare(self, advance: bool) -> list:
        """The extra input arrays for one call (``advance``: also move Python-side state
        on, as eager's update does; a trace only looks)."""
        if advance and self.recipe is not None:
            return self._fast_prepare()
        arrays, keys, seen = [], [], set()
        recipe, advances = [], []
        for opt in self.opts:
            rule = rule_for(opt)
            for gi, group in enumerate(opt.param_groups):
                for p in group["params"]:
                    if not p.requires_grad:
                        continue
                    state = opt.state.setdefault(p, {})
                    rule.init(p, state, group)
                    names = rule.state_names(group, state)
                    for name in names:
                        keys.append(("state", id(p), name))
                        arrays.append(state[name]._data)
                        recipe.append((state, name))
                    look = dict(state)
                    if advance:
                        rule.advance(state, group)
                        look = state
                        if "step" in state:
                            advances.append((rule, state, group))
                    elif "step" in look:
                        look["step"] = look["step"] + 1
                    dtype = p._data.dtype
                    # One set of scalars per group, dtype and step count (usually one).
                    skey = (id(opt), gi, dtype.str, look.get("step"))
                    self.scalar_of[id(p)] = skey
                    if skey not in seen:
                        seen.add(skey)
                        values = rule.scalars(group, look)
                        for name, value in values.items():
                            keys.append(("scalar", skey, name))
                            arrays.append(np.array(value, dtype))
                        recipe.append((rule, group, state, dtype, tuple(values)))
        self.extra_keys = keys
        if advance:  # the same walk for every later call with this plan, without the walk
            self.recipe, self.advances = recipe, advances
        return arrays

    def _fast_prepare(self) -> list:
        for rule, state, group in self.advances:
            rule.advance(state, group)
        arrays = []
        for item in self.recipe:
            if len(item) == 2:
                arrays.append(item[0][item[1]]._data)
            else:
                rule, group, state, dtype, names = item
                values = rule.scalars(group, state)
                arrays += [np.array(values[n], dtype) for n in names]
        return arrays


# ---- the hooks that run while a step is traced --------------------------------------------


def _backward_hook(root, gradient, retain_graph):
    ctx = _CTX.current
    tracer = dispatch.trace_hook()
    if gradient is not None and not isinstance(gradient, Tensor):
        gradient = Tensor(gradient, dtype=root.dtype)
    try:
        leaves = backward_in_trace(tracer, root, gradient)
    except NotDifferentiable as err:
        raise NotCompilable(str(err)) from None
    params = {}
    for p in ctx.plan.params:
        nid = leaf_of(tracer, p)
        if nid is not None:
            params[nid] = p
    users = {tracer.node_of.get(id(t)): i for i, t in enumerate(ctx.user)}
    for nid, g in leaves.items():
        if nid in params:
            p = params[nid]
            if p.grad is not None:
                raise NotCompilable("a gradient accumulates into a .grad left by an earlier "
                                    "call (call zero_grad() before backward in the step)")
            p.grad = g
            ctx.write(("grad", p), g)
            ctx.grad_params.append(p)
        elif nid in users:
            ctx.write(("input_grad", users[nid]), g)
        else:
            raise NotCompilable("backward reaches a tensor that requires grad and is "
                                "neither a parameter nor an argument of the step")


def _step_hook(opt, closure):
    if closure is not None:
        raise NotCompilable("optimizer.step(closure) is not compiled")
    ctx = _CTX.current
    rule = rule_for(opt)
    if rule is None or opt not in ctx.plan.opts:
        raise NotCompilable(f"{type(opt).__name__} is not an optimiser the step names")
    tracer = dispatch.trace_hook()
    first = tracer.graph._next_id
    with autograd.no_grad():
        for group in opt.param_groups:
            for p in group["params"]:
                if p.grad is None or not p.requires_grad:
                    continue
                if id(p.grad) not in tracer.node_of:
                    raise NotCompilable("a parameter's .grad was not computed in the step")
                skey = ctx.plan.scalar_of[id(p)]
                sc = {k[2]: t for k, t in ctx.extras.items() if k[0] == "scalar" and
                      k[1] == skey}
                state = {k[2]: t for k, t in ctx.extras.items() if k[0] == "state" and
                         k[1] == id(p)}
                new_p, new_state = rule.update(p, p.grad, state, sc, group)
                ctx.write(("param", p), new_p)
                for name, value in new_state.items():
                    ctx.write(("state", opt, p, name), value)
    mark_phase(tracer.graph, first, "update")
    return None


class Tracing:
    """While a step is traced: the hooks are installed and the parameters' ``.grad`` are
    put back afterwards (the trace assigns traced gradients to them)."""

    def __init__(self, ctx, params):
        self.ctx, self.params = ctx, params

    def __enter__(self):
        self.grads = [p.grad for p in self.params]
        self.prev = (_CTX.current, autograd._state.backward_hook, TRACING.step_hook)
        _CTX.current = self.ctx
        autograd._state.backward_hook = _backward_hook
        TRACING.step_hook = _step_hook
        return self

    def __exit__(self, *exc):
        _CTX.current, autograd._state.backward_hook, TRACING.step_hook = self.prev
        for p, g in zip(self.params, self.grads):
            p.grad = g
        return False
