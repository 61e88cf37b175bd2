"""The user-facing ``fuse``: a class decorator and a function on module instances.

``@fuse class MLP(nn.Module)`` makes every instance's call run fused;
``fuse(net)`` returns a :class:`FusedModule` that shares ``net``'s parameters
and state (``state_dict``, ``train``/``eval``, ``to``... all act on ``net``).
"""
from __future__ import annotations

from ..nn import Module
from .fused import FusionRunner

__all__ = ["fuse", "FusedModule"]

_OPTIONS = ("backend", "passes", "fallback", "cache_size")


def _runner_of(module, options) -> FusionRunner:
    runner = module.__dict__.get("_fusion_runner")
    if runner is None:
        runner = FusionRunner(module, lambda *a, **k: Module.__call__(module, *a, **k),
                              type(module).__name__, **options)
        object.__setattr__(module, "_fusion_runner", runner)
    return runner


def _fuse_class(cls, options):
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise TypeError(f"@fuse decorates nn.Module subclasses, not {cls!r}")

    def __call__(self, *args, **kwargs):
        return _runner_of(self, options)(args, kwargs)

    __call__.__doc__ = f"Run {cls.__name__}.forward fused (see fusionnet.fuse)."
    cls.__call__ = __call__
    cls._fuse_options = dict(options)
    return cls


class FusedModule(Module):
    """A module whose calls run ``original``'s forward compiled; it shares all its state."""

    def __init__(self, original: Module, **options):
        super().__init__()
        object.__setattr__(self, "_orig", original)
        object.__setattr__(self, "_fusion_runner", FusionRunner(
            original, original.__call__, type(original).__name__, **options))

    def __call__(self, *args, **kwargs):
        return self._fusion_runner(args, kwargs)

    def forward(self, *args, **kwargs):
        """Same as calling the module: the fused forward of the original."""
        return self._fusion_runner(args, kwargs)

    def __getattr__(self, name):
        return getattr(object.__getattribute__(self, "_orig"), name)

    def __getitem__(self, idx):
        return self._orig[idx]

    def __len__(self):
        return len(self._orig)

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


# State and traversal act on the original module, so keys carry no wrapper prefix.
for _name in ("parameters", "named_parameters", "buffers", "named_buffers", "children",
              "named_children", "modules", "named_modules", "state_dict", "load_state_dict",
              "zero_grad", "requires_grad_", "apply", "extra_repr"):
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
    """Compile a block's forward: ``@fuse`` on a Module subclass, or ``fuse(module)``.

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
    raise TypeError(f"fuse expects an nn.Module subclass or instance, got {type(obj).__name__}")
