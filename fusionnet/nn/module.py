"""``Module``: the base class of every block, with PyTorch's registration and traversal rules."""
from __future__ import annotations

import threading
from collections import OrderedDict, namedtuple
from typing import Any, Callable, Iterator


from ..autograd import no_grad
from ..device import move_
from ..dtypes import as_dtype
from ..factories import zeros_like
from ..tensor import Tensor, parse_to_args
from .parameter import Parameter, UninitializedParameter

__all__ = ["Module", "IncompatibleKeys", "zero_grads", "STRUCTURE_VERSION"]

#: Bumped whenever any module attribute (parameter, buffer, child, tensor or plain
#: value) is assigned or deleted, or a forward hook is added or removed. Compiled
#: forwards (``fusionnet.fuse``) compare this counter on each call and re-check what
#: they captured when it moved, so replacing ``net.fc.weight`` or changing a Python
#: setting such as ``net.scale = 0.5`` is never missed.
STRUCTURE_VERSION = [0]


class _Registry(OrderedDict):
    """The ``_parameters``/``_buffers``/``_modules`` dicts: every change bumps the version."""

    def __setitem__(self, key, value):
        STRUCTURE_VERSION[0] += 1
        super().__setitem__(key, value)

    def __delitem__(self, key):
        STRUCTURE_VERSION[0] += 1
        super().__delitem__(key)

    def pop(self, key, *default):
        STRUCTURE_VERSION[0] += 1
        return super().pop(key, *default)

    def popitem(self, last=True):
        STRUCTURE_VERSION[0] += 1
        return super().popitem(last)

    def clear(self):
        STRUCTURE_VERSION[0] += 1
        super().clear()

    def update(self, *args, **kwargs):
        STRUCTURE_VERSION[0] += 1
        for k, v in dict(*args, **kwargs).items():
            super().__setitem__(k, v)

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]


class _Routes(threading.local):
    """Per thread: the compiled runners a fused parent running its forward eagerly routes
    its direct children's calls to (``None``: route nothing). Set by the runtime."""

    table = None


_ROUTES = _Routes()


#: What ``load_state_dict(strict=False)`` returns, as in PyTorch.
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _addindent(text: str, spaces: int) -> str:
    """Indent every line but the first (PyTorch's nested-repr helper)."""
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


def zero_grads(params: Iterator[Tensor], set_to_none: bool = True) -> None:
    """Reset the ``.grad`` of each tensor in ``params``: to None, or to zeros in place."""
    for p in params:
        if p.grad is None:
            continue
        if set_to_none:
            p.grad = None
            continue
        g = p.grad.detach()
        try:
            g.zero_()
        except (ValueError, RuntimeError):
            # Autograd may leave a read-only broadcast view as .grad (the gradient of
            # a sum); such a gradient cannot be zeroed in place, so replace it.
            g = zeros_like(g)
        p.grad = g


class _HookHandle:
    """Returned by ``register_forward_hook``: ``remove()`` unregisters the hook."""

    _next_id = 0

    def __init__(self, hooks: dict):
        self.hooks, self.id = hooks, _HookHandle._next_id
        _HookHandle._next_id += 1

    def remove(self) -> None:
        """Unregister the hook."""
        STRUCTURE_VERSION[0] += 1
        self.hooks.pop(self.id, None)


class Module:
    """Base class for all blocks: layers, losses and whole networks.

    Assigning a :class:`Parameter`, a Module or (via :meth:`register_buffer`) a
    tensor to an attribute registers it, so :meth:`parameters`,
    :meth:`state_dict`, :meth:`to` and ``repr`` find it; calling the module
    runs :meth:`forward`.
    """

    training: bool

    def __init__(self, *args, **kwargs) -> None:
        if args or kwargs:
            raise TypeError(f"{type(self).__name__}.__init__() got unexpected arguments")
        # object.__setattr__: our own __setattr__ reads these dicts.
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", _Registry())
        object.__setattr__(self, "_buffers", _Registry())
        object.__setattr__(self, "_non_persistent_buffers_set", set())
        object.__setattr__(self, "_modules", _Registry())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())

    # ---- calling ---------------------------------------------------------------------

    def forward(self, *args, **kwargs):
        """The computation; every subclass defines it."""
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required '
                                  f'"forward" function')

    def __call__(self, *args, **kwargs):
        routes = _ROUTES.table
        if routes is not None:
            # A fused parent that runs its own forward eagerly calls this child compiled.
            runner = routes.get(id(self))
            if runner is not None:
                return runner(args, kwargs)
        for hook in list(self._forward_pre_hooks.values()):
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        out = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            result = hook(self, args, out)
            if result is not None:
                out = result
        return out

    def register_forward_hook(self, hook: Callable) -> _HookHandle:
        """Call ``hook(module, args, output)`` after every forward; a non-None result
        replaces the output."""
        handle = _HookHandle(self._forward_hooks)
        STRUCTURE_VERSION[0] += 1
        self._forward_hooks[handle.id] = hook
        return handle

    def register_forward_pre_hook(self, hook: Callable) -> _HookHandle:
        """Call ``hook(module, args)`` before every forward; a non-None result replaces
        the arguments."""
        handle = _HookHandle(self._forward_pre_hooks)
        STRUCTURE_VERSION[0] += 1
        self._forward_pre_hooks[handle.id] = hook
        return handle

    # ---- registration ----------------------------------------------------------------

    def _check_name(self, name: Any, kind: str) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {kind} before Module.__init__() call")
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
        if "." in name or name == "":
            raise KeyError(f'{kind} name can\'t contain "." or be empty, got {name!r}')

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add ``param`` (or None) as parameter ``name``."""
        self._check_name(name, "parameter")
        if hasattr(self, name) and name not in self._parameters:
            raise KeyError(f"attribute '{name}' already exists")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter "
                            f"'{name}' (nn.Parameter or None required)")
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Add ``tensor`` as buffer ``name``: module state that is not a parameter (saved in
        :meth:`state_dict` unless ``persistent=False``, moved by :meth:`to`)."""
        self._check_name(name, "buffer")
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError(f"attribute '{name}' already exists")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer "
                            f"'{name}' (Tensor or None required)")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        """Add child ``module`` under ``name`` (any string without a dot)."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._check_name(name, "module")
        if hasattr(self, name) and name not in self._modules:
            raise KeyError(f"attribute '{name}' already exists")
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            self._forget(name)
            params[name] = value
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter "
                                f"'{name}' (nn.Parameter or None expected)")
            params[name] = None
        elif isinstance(value, Module):
            if params is None:
                raise AttributeError("cannot assign module before Module.__init__() call")
            self._forget(name)
            self._modules[name] = value
        elif params is not None and name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module "
                                f"'{name}' (nn.Module or None expected)")
            self._modules[name] = None
        elif params is not None and name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                                "(Tensor or None expected)")
            self._buffers[name] = value
        else:
            STRUCTURE_VERSION[0] += 1  # forward may read it: compiled code re-checks
            object.__setattr__(self, name, value)

    def _forget(self, name: str) -> None:
        """Drop ``name`` from every registry (it is about to be re-registered)."""
        self.__dict__.pop(name, None)
        for store in ("_parameters", "_buffers", "_modules"):
            self.__dict__[store].pop(name, None)
        self._non_persistent_buffers_set.discard(name)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: look in the registries.
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        STRUCTURE_VERSION[0] += 1
        for store in ("_parameters", "_buffers", "_modules"):
            if name in self.__dict__.get(store, ()):
                del self.__dict__[store][name]
                self._non_persistent_buffers_set.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    # ---- traversal -------------------------------------------------------------------

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """``(name, child)`` for each direct child (each module once)."""
        seen = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self) -> Iterator[Module]:
        """The direct children."""
        for _, m in self.named_children():
            yield m

    def named_modules(self, memo: set | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        """``(dotted name, module)`` for this module and every descendant, depth first."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is None:
                continue
            sub = prefix + ("." if prefix else "") + name
            yield from m.named_modules(memo, sub, remove_duplicate)

    def modules(self) -> Iterator[Module]:
        """This module and every descendant (each once)."""
        for _, m in self.named_modules():
            yield m

    def _named_members(self, store: str, prefix: str, recurse: bool,
                       remove_duplicate: bool = True):
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) \
            if recurse else [(prefix, self)]
        seen = set()
        for mod_prefix, mod in mods:
            for name, value in getattr(mod, store).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield mod_prefix + ("." if mod_prefix else "") + name, value

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, parameter)`` pairs; a parameter shared by two modules is listed
        once, under its first name."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """Every parameter (each once)."""
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        """``(dotted name, buffer)`` pairs."""
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        """Every buffer (each once)."""
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def get_submodule(self, target: str) -> Module:
        """The descendant at dotted path ``target`` ('' is this module)."""
        mod = self
        for part in target.split(".") if target else []:
            if part not in mod._modules:
                raise AttributeError(f"{mod._get_name()} has no attribute `{part}`")
            mod = mod._modules[part]
        return mod

    def get_parameter(self, target: str) -> Parameter:
        """The parameter at dotted path ``target``."""
        mod_path, _, name = target.rpartition(".")
        mod = self.get_submodule(mod_path)
        if name not in mod._parameters:
            raise AttributeError(f"{mod._get_name()} has no parameter `{name}`")
        return mod._parameters[name]

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call ``fn`` on every child (recursively) and then on this module; returns self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ---- modes and gradients --------------------------------------------------------

    def train(self, mode: bool = True) -> Module:
        """Set training mode (Dropout is active) on this module and its descendants."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        STRUCTURE_VERSION[0] += 1  # compiled forwards re-check the modes they baked in
        object.__setattr__(self, "training", mode)
        for m in self.children():
            m.train(mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode: ``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Set ``requires_grad`` of every parameter; returns self."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient: to None (default) or to zeros."""
        zero_grads(self.parameters(), set_to_none)

    # ---- state ----------------------------------------------------------------------

    def state_dict(self, destination: OrderedDict | None = None, prefix: str = "",
                   keep_vars: bool = False) -> OrderedDict:
        """Parameters and persistent buffers by dotted name, as detached tensors that share
        storage with the module's (a tied parameter appears under each of its names)."""
        if destination is None:
            destination = OrderedDict()
        for name, p in self._parameters.items():
            if p is not None:
                # An uninitialised lazy parameter has nothing to detach: listed as is,
                # as PyTorch does.
                keep = keep_vars or isinstance(p, UninitializedParameter)
                destination[prefix + name] = p if keep else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = b if keep_vars else b.detach()
        for name, m in self._modules.items():
            if m is not None:
                m.state_dict(destination, prefix + name + ".", keep_vars)
        return destination

    def _local_state(self, prefix: str):
        for name, p in self._parameters.items():
            if p is not None:
                yield prefix + name, p
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers_set:
                yield prefix + name, b

    def load_state_dict(self, state_dict: dict, strict: bool = True) -> IncompatibleKeys:
        """Copy values from ``state_dict`` into this module's parameters and buffers in place.

        Raises RuntimeError naming every missing key, unexpected key (both only when
        ``strict``) and shape mismatch; returns ``(missing_keys, unexpected_keys)``.
        """
        missing, mismatch, expected = [], [], set()
        with no_grad():
            for prefix, mod in self._state_prefixes():
                for key, target in mod._local_state(prefix):
                    expected.add(key)
                    if key not in state_dict:
                        missing.append(key)
                        continue
                    value = state_dict[key]
                    if not isinstance(value, Tensor):
                        value = Tensor(value)
                    if isinstance(target, UninitializedParameter):
                        target.materialize(value.shape)
                    elif tuple(value.shape) != tuple(target.shape):
                        mismatch.append(
                            f"size mismatch for {key}: copying a param with shape "
                            f"{value.shape} from checkpoint, the shape in current model is "
                            f"{target.shape}.")
                        continue
                    target.copy_(value.to(target.device).to(target.dtype))
        unexpected = [k for k in state_dict if k not in expected]
        errors = []
        if strict and unexpected:
            errors.append("Unexpected key(s) in state_dict: "
                          + ", ".join(f'"{k}"' for k in unexpected) + ". ")
        if strict and missing:
            errors.append("Missing key(s) in state_dict: "
                          + ", ".join(f'"{k}"' for k in missing) + ". ")
        errors.extend(mismatch)
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {self._get_name()}:\n\t"
                               + "\n\t".join(errors))
        return IncompatibleKeys(missing, unexpected)

    def _state_prefixes(self, prefix: str = ""):
        """``(prefix, module)`` along the state_dict traversal (no de-duplication)."""
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m._state_prefixes(prefix + name + ".")

    # ---- devices and dtypes ------------------------------------------------------------

    def to(self, *args, **kwargs) -> Module:
        """Move (``to(device)``) and/or cast (``to(dtype)``, floating point tensors only)
        every parameter, gradient and buffer in place; returns self.

        The Parameter objects stay the same (an optimiser holding them keeps working);
        only their storage is replaced.
        """
        device, dt, _ = parse_to_args(args, kwargs)
        if dt is not None:
            dt = as_dtype(dt)
            if not dt.is_floating_point:
                raise TypeError(f"nn.Module.to only accepts floating point dtypes, got {dt}")
        with no_grad():
            for m in self.modules():
                for p in m._parameters.values():
                    if isinstance(p, UninitializedParameter):
                        # Nothing to move yet: remember where to materialise.
                        if device is not None:
                            p.__dict__["_lazy_device"] = device
                        if dt is not None:
                            p.__dict__["_lazy_dtype"] = dt
                    elif p is not None:
                        move_(p, device, dt)
                for b in m._buffers.values():
                    if b is not None:
                        move_(b, device, dt)
        return self

    def cpu(self) -> Module:
        """Move everything to the CPU; returns self."""
        return self.to("cpu")

    def cuda(self, device: int | str | None = None) -> Module:
        """Move everything to a CUDA device (``cuda`` or ``cuda:N``); returns self."""
        if device is None:
            device = "cuda"
        elif isinstance(device, int):
            device = f"cuda:{device}"
        return self.to(device)

    def float(self) -> Module:
        """Cast floating point parameters and buffers to float32; returns self."""
        return self.to(as_dtype("float32"))

    def double(self) -> Module:
        """Cast floating point parameters and buffers to float64; returns self."""
        return self.to(as_dtype("float64"))

    # ---- printing ---------------------------------------------------------------------

    def _get_name(self) -> str:
        return type(self).__name__

    def extra_repr(self) -> str:
        """The text inside this module's parentheses in ``repr`` (subclasses override)."""
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({key}): " + _addindent(repr(m), 2)
                       for key, m in self._modules.items()]
        lines = extra_lines + child_lines
        body = ""
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                body = extra_lines[0]
            else:
                body = "\n  " + "\n  ".join(lines) + "\n"
        return f"{self._get_name()}({body})"
