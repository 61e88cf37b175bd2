"""The user-facing ``fuse``: a class decorator and a function on module instances.

``@fuse class MLP(nn.Module)`` makes every instance's call run fused;
``fuse(net)`` returns a :class:`FusedModule` that shares ``net``'s parameters
and state (``state_dict``, ``train``/``eval``, ``to``... all act on ``net``;
attributes set on the wrapper are set on ``net``). Hooks registered on the wrapper
run around the compiled call, as on any module. Both forms deep-copy (EMA weights,
target networks) into an independent fused module that compiles on its own.
"""
from __future__ import annotations

import copy

from ..nn import Module
from .runner import FusionRunner

__all__ = ["fuse", "FusedModule"]

#: Attributes that belong to the wrapper itself, never forwarded to the original.
_OWN = frozenset({"_orig", "_fusion_runner", "_fuse_options", "_forward_hooks",
                  "_forward_pre_hooks", "_hooked"})


def _runner_of(module, options) -> FusionRunner:
    runner = module.__dict__.get("_fusion_runner")
    if runner is None:
        runner = FusionRunner(module, type(module).__name__, wrapper=False, **options)
        object.__setattr__(module, "_fusion_runner", runner)
    return runner


def _fuse_class(cls, options):
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise TypeError(f"@fuse decorates nn.Module subclasses, not {cls!r}")

    def __call__(self, *args, **kwargs):
        return _runner_of(self, options)(args, kwargs)

    inherited_getstate = cls.__getstate__

    def __getstate__(self):
        # Copies and pickles leave the compiled code behind: the copy compiles anew.
        state = inherited_getstate(self)
        if isinstance(state, dict) and "_fusion_runner" in state:
            state = {k: v for k, v in state.items() if k != "_fusion_runner"}
        return state

    __call__.__doc__ = f"Run {cls.__name__}.forward fused (see fusionnet.fuse)."
    cls.__call__ = __call__
    cls.__getstate__ = __getstate__
    return cls


class FusedModule(Module):
    """A module whose calls run ``original``'s forward compiled; it shares all its state."""

    def __init__(self, original: Module, **options):
        super().__init__()
        d = self.__dict__
        d["_orig"] = original
        d["_fuse_options"] = dict(options)
        d["_hooked"] = False  # set once a hook is registered on the wrapper
        # One set of registries: traversal, state_dict and name lookups through the
        # wrapper see exactly the original's parameters, buffers and children.
        for store in ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"):
            d[store] = original.__dict__[store]
        d["_fusion_runner"] = FusionRunner(original, type(original).__name__, wrapper=True,
                                           **options)

    def __call__(self, *args, **kwargs):
        # A wrapper is never routed (a partially compiled parent leaves fused children
        # alone), so only its own hooks need Module.__call__ (one attribute read here: this
        # line is on every fused call's path).
        if self._hooked:
            return Module.__call__(self, *args, **kwargs)
        return self._fusion_runner(args, kwargs)  # the common case: straight to the runner

    def register_forward_hook(self, hook):
        """A hook around the compiled call (see :meth:`Module.register_forward_hook`)."""
        self.__dict__["_hooked"] = True
        return Module.register_forward_hook(self, hook)

    def register_forward_pre_hook(self, hook):
        """A hook before the compiled call (see :meth:`Module.register_forward_pre_hook`)."""
        self.__dict__["_hooked"] = True
        return Module.register_forward_pre_hook(self, hook)

    def forward(self, *args, **kwargs):
        """The fused forward of the original (hooks of the wrapper run around it)."""
        return self._fusion_runner(args, kwargs)

    def __getattr__(self, name):
        return getattr(object.__getattribute__(self, "_orig"), name)

    def __setattr__(self, name, value):
        if name in _OWN:
            object.__setattr__(self, name, value)
        else:  # the wrapper is a view of the original: its settings are the original's
            setattr(self._orig, name, value)

    def __delattr__(self, name):
        delattr(self._orig, name)

    def __getitem__(self, idx):
        return self._orig[idx]

    def __len__(self):
        return len(self._orig)

    def __iter__(self):
        return iter(self._orig)

    def __bool__(self) -> bool:
        return True  # a module is truthy even when its original has no __len__

    def __repr__(self) -> str:
        return f"FusedModule({self._orig!r})"

    @property
    def training(self) -> bool:
        """The original module's training flag."""
        return self._orig.training

    @training.setter
    def training(self, value: bool):
        if "_orig" in self.__dict__:
            self._orig.training = value

    @property
    def original(self) -> Module:
        """The module being fused."""
        return self._orig

    def __deepcopy__(self, memo):
        original = copy.deepcopy(self._orig, memo)
        new = FusedModule(original, **self._fuse_options)
        memo[id(self)] = new
        for store in ("_forward_hooks", "_forward_pre_hooks"):
            new.__dict__[store].update(copy.deepcopy(self.__dict__[store], memo))
        new.__dict__["_hooked"] = self._hooked
        return new

    def __getstate__(self):
        return {"_orig": self._orig, "_fuse_options": self._fuse_options,
                "_forward_hooks": self._forward_hooks,
                "_forward_pre_hooks": self._forward_pre_hooks}

    def __setstate__(self, state):
        fresh = FusedModule(state["_orig"], **state["_fuse_options"])
        self.__dict__.update(fresh.__dict__)
        self.__dict__["_forward_hooks"].update(state["_forward_hooks"])
        self.__dict__["_forward_pre_hooks"].update(state["_forward_pre_hooks"])
        self.__dict__["_hooked"] = bool(state["_forward_hooks"] or state["_forward_pre_hooks"])


# State and traversal act on the original module, so keys carry no wrapper prefix.
for _name in ("parameters", "named_parameters", "buffers", "named_buffers", "children",
              "named_children", "modules", "named_modules", "state_dict", "load_state_dict",
              "zero_grad", "requires_grad_", "apply", "extra_repr", "get_submodule",
              "get_parameter"):
    setattr(FusedModule, _name, (lambda n: lambda self, *a, **k: getattr(self._orig, n)(*a, **k))(
        _name))


def _wrapped_mode(name):
    def method(self, *args, **kwargs):
        getattr(self._orig, name)(*args, **kwargs)
        return self
    method.__name__ = name
    method.__doc__ = f"``{name}`` on the original module; returns this wrapper."
    return method


for _name in ("train", "eval", "to", "cpu", "cuda", "float", "double"):
    setattr(FusedModule, _name, _wrapped_mode(_name))


def fuse(obj=None, *, backend: str = "auto", passes=None, fallback: bool = True,
         cache_size: int = 32):
    """Compile a block's forward: ``@fuse`` on a Module subclass, or ``fuse(module)``; or a
    whole training step: ``fuse(step)`` on a plain function (see ``docs/training.md``).

    Options: ``backend`` (``"auto"``, ``"numba"`` or ``"eager"``), ``passes`` (a
    pass list for :func:`fusionnet.optimize`), ``fallback`` (run eagerly with a
    warning when something cannot be compiled; ``False`` raises instead) and
    ``cache_size`` (compiled signatures kept per module).
    """
    options = {"backend": backend, "passes": passes, "fallback": fallback,
               "cache_size": cache_size}
    if obj is None:
        return lambda o: fuse(o, **options)
    if isinstance(obj, type):
        return _fuse_class(obj, options)
    if isinstance(obj, Module):
        return FusedModule(obj, **options)
    if callable(obj) and hasattr(obj, "__code__") or hasattr(obj, "__func__"):
        # A plain function (a training step): compiled whole, see runtime/step.py.
        from .step import FusedStep  # noqa: PLC0415

        if backend not in ("auto", "numba", "eager"):
            raise ValueError(f"fuse: backend must be 'auto', 'numba' or 'eager', got "
                             f"{backend!r}")
        return FusedStep(obj, fallback=fallback, passes=passes, cache_size=cache_size,
                         backend=backend)
    raise TypeError(f"fuse expects an nn.Module subclass or instance or a function, got "
                    f"{type(obj).__name__}")
