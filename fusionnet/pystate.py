"""What a trace read from Python state, and the guards that re-check it on later calls.

A traced graph bakes in every Python value ``forward`` used: ``self.scale``, a global
``SCALE``, ``self.sizes[0]``, a helper function, a tensor held in a list attribute.
:class:`Recorder` watches a trace (module attribute reads through a temporary
``Module.__getattribute__``, user functions that ran through ``sys.setprofile``) and
:func:`build_guard` turns what it saw into a check that runs before each compiled call:
globals, closure cells and mutable module attributes (lists, dicts, plain objects) are
compared with a *fingerprint* taken at compile time. Simple immutable attributes are
re-checked only when ``STRUCTURE_VERSION`` moves (assignment is the only way to change
them), so most blocks pay nothing per call.

What is trusted, not guarded: code and globals of the standard library, of installed
packages (site-packages) and of fusionnet itself; modules bound to global names.
"""
from __future__ import annotations

import builtins
import dis
import gc
import math
import os
import sys
import sysconfig
import threading
import types

__all__ = ["Recorder", "fingerprint", "build_guard", "is_user_frame", "user_frames",
           "ObjectIndex", "first_failure", "MODULE_INTERNALS"]

_MISSING = object()
_SIMPLE = (int, float, complex, str, bytes, bool, type(None))
_IDENTITY = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type,
             types.ModuleType, types.CodeType)
_TRUSTED_DIRS = tuple(os.path.realpath(p) + os.sep for p in {
    sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
    sysconfig.get_paths()["platlib"]} if p)
#: The attributes every Module has; module state is guarded by the runtime, not here.
MODULE_INTERNALS = frozenset({"training", "_parameters", "_buffers", "_modules",
                               "_non_persistent_buffers_set", "_forward_hooks",
                               "_forward_pre_hooks", "_fusion_runner", "__dict__",
                               "__class__", "forward"})
_MAX_DEPTH = 6
_local = threading.local()


# ---- which code is the user's -------------------------------------------------------------

def _is_internal_globals(g: dict) -> bool:
    name = g.get("__name__") or ""
    internal = name == "fusionnet" or name.startswith("fusionnet.")
    # Example code shipped with fusionnet (fusionnet.zoo) declares itself user code.
    return internal and not g.get("__fusionnet_user_code__", False)


_TRUSTED_CACHE: dict = {}


def _is_trusted_file(filename: str) -> bool:
    hit = _TRUSTED_CACHE.get(filename)
    if hit is None:
        if filename.startswith("<"):  # frozen stdlib modules are trusted; <string>, cells not
            hit = filename.startswith("<frozen ")
        else:
            hit = os.path.realpath(filename).startswith(_TRUSTED_DIRS)
        _TRUSTED_CACHE[filename] = hit
    return hit


def is_user_frame(frame) -> bool:
    """True for frames of the user's own code: not fusionnet, the stdlib or installed
    packages (fusionnet's example module ``zoo`` counts as user code, also when fusionnet
    itself is installed in site-packages)."""
    g = frame.f_globals
    if g.get("__fusionnet_user_code__", False):
        return True
    return not _is_internal_globals(g) and not _is_trusted_file(frame.f_code.co_filename)


def _is_generated(code) -> bool:
    # exec()-built code: namedtuple's ``__new__``, networkx's argmap wrappers, a user's
    # own exec'd function. Real files and frozen stdlib modules have a path-like name.
    name = code.co_filename
    return name.startswith("<") and not name.startswith("<frozen ")


def _reads_user_state(frame) -> bool:
    """Whether a trace must guard what ``frame``'s code reads: user code, where code built
    by exec() counts only when user code (or Module's call machinery, for an exec'd
    ``forward``) called it. Library-generated wrappers that fusionnet or a package call
    (networkx's argmap functions, namedtuple constructors) are library code."""
    if not is_user_frame(frame):
        return False
    if not _is_generated(frame.f_code):
        return True
    if _library_namespace(frame.f_globals):
        return False
    caller = frame.f_back
    return caller is None or is_user_frame(caller) or (
        caller.f_globals.get("__name__") == _MODULE_CALLER)


_MODULE_CALLER = "fusionnet.nn.module"


def _library_namespace(glb: dict) -> bool:
    # collections.namedtuple builds ``__new__`` in a namespace named after the type;
    # other generated code that runs in a trusted module's own globals is that module's.
    name = glb.get("__name__") or ""
    if name.startswith("namedtuple_"):
        return True
    mod = sys.modules.get(name)
    file = getattr(mod, "__file__", None)
    return mod is not None and mod.__dict__ is glb and bool(file) and (
        _is_trusted_file(file) or _is_internal_globals(glb))


def user_frames(frame):
    """The user-code frames from ``frame`` outwards."""
    while frame is not None:
        if is_user_frame(frame):
            yield frame
        frame = frame.f_back


# ---- fingerprints -----------------------------------------------------------------------------

def fingerprint(value, depth: int = 0):
    """A comparable summary of ``value``: simple values by type and value, containers and
    plain objects recursively, tensors, arrays, functions and classes by identity."""
    if isinstance(value, _SIMPLE):
        if isinstance(value, float) and math.isnan(value):
            return (float, "nan")
        return (type(value), value)
    if depth >= _MAX_DEPTH or isinstance(value, _IDENTITY):
        return ("id", id(value))
    kind = type(value)
    if kind in (list, tuple) or (isinstance(value, tuple) and hasattr(kind, "_fields")):
        return (kind, tuple(fingerprint(v, depth + 1) for v in value))
    if kind is dict:
        return (dict, tuple((fingerprint(k, depth + 1), fingerprint(v, depth + 1))
                            for k, v in value.items()))
    if kind in (set, frozenset):
        return (kind, frozenset(fingerprint(v, depth + 1) for v in value))
    if _is_tensor_like(value) or _is_module(value):
        return ("id", id(value))
    state = getattr(value, "__dict__", None)
    if isinstance(state, dict):  # plain objects, namespaces, dataclasses
        return ("obj", id(value), fingerprint(state, depth + 1))
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return (kind, value)  # numpy scalars, enums, other hashable values


def _is_tensor_like(value) -> bool:
    return hasattr(value, "_data") and hasattr(value, "_version") or hasattr(
        value, "__array_interface__") or hasattr(value, "__cuda_array_interface__")


def _is_module(value) -> bool:
    return hasattr(value, "_parameters") and hasattr(value, "_modules")


def _immutable(value, depth: int = 0) -> bool:
    """Values that can only change by rebinding (so a version counter notices)."""
    if isinstance(value, _SIMPLE) or isinstance(value, _IDENTITY):
        return True
    if type(value) in (tuple, frozenset) and depth < _MAX_DEPTH:
        return all(_immutable(v, depth + 1) for v in value)
    return _is_tensor_like(value) or _is_module(value)


# ---- recording a trace ------------------------------------------------------------------------

class Recorder:
    """Collects, for one trace in this thread, the user code that ran and the module
    attributes it read. Use as a context manager around the traced call."""

    _lock = threading.Lock()
    _installed = 0
    _saved_getattribute = None

    def __init__(self, module_class):
        self.module_class = module_class
        self.codes: dict = {}        # code object -> its globals
        self.attrs: dict = {}        # (id(module), name) -> (module, name, where)
        self._prev_profile = None
        self._prev = None

    # -- installation (refcounted: several threads may trace at once) --

    def __enter__(self):
        self._prev = getattr(_local, "recorder", None)
        _local.recorder = self
        cls = Recorder
        with cls._lock:
            if cls._installed == 0:
                cls._saved_getattribute = self.module_class.__dict__.get("__getattribute__")
                self.module_class.__getattribute__ = _recording_getattribute
            cls._installed += 1
        self._prev_profile = sys.getprofile()
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc):
        sys.setprofile(self._prev_profile)
        cls = Recorder
        with cls._lock:
            cls._installed -= 1
            if cls._installed == 0:
                if cls._saved_getattribute is None:
                    del self.module_class.__getattribute__
                else:
                    self.module_class.__getattribute__ = cls._saved_getattribute
        _local.recorder = self._prev
        return False

    def _profile(self, frame, event, arg):
        if event == "call" and frame.f_code not in self.codes and _reads_user_state(frame):
            self.codes[frame.f_code] = frame.f_globals
        if self._prev_profile is not None:
            self._prev_profile(frame, event, arg)

    def note_attr(self, module, name, where):
        self.attrs.setdefault((id(module), name), (module, name, where))


def _recording_getattribute(self, name):
    value = object.__getattribute__(self, name)
    rec = getattr(_local, "recorder", None)
    if rec is not None and name not in MODULE_INTERNALS and not name.startswith("__"):
        inst = object.__getattribute__(self, "__dict__")
        if name in inst:
            rec.note_attr(self, name, "instance")
        elif not callable(value) and not isinstance(value, (property, classmethod,
                                                             staticmethod)):
            rec.note_attr(self, name, "class")
    return value


# ---- guards -----------------------------------------------------------------------------------

def _global_names(code) -> list[str]:
    """Names ``code`` (and code nested in it: comprehensions, lambdas) loads as globals."""
    names = []
    for ins in dis.get_instructions(code):
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and ins.argval not in names:
            names.append(ins.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += [n for n in _global_names(const) if n not in names]
    return names


def _closure_cells(code) -> list[tuple[str, object]]:
    """(name, cell) of every function object running ``code`` (found once, at compile)."""
    if not code.co_freevars:
        return []
    cells = []
    for fn in gc.get_referrers(code):
        if isinstance(fn, types.FunctionType) and fn.__code__ is code and fn.__closure__:
            for name, cell in zip(code.co_freevars, fn.__closure__):
                if name != "__class__":
                    cells.append((name, cell))
    return cells


class Check:
    """One guarded Python value: how to read it now, and what it was."""

    __slots__ = ("what", "read", "expected")

    def __init__(self, what: str, read, expected):
        self.what, self.read, self.expected = what, read, expected

    def holds(self) -> bool:
        """Whether the value still has its compile-time fingerprint."""
        try:
            return fingerprint(self.read()) == self.expected
        except Exception:  # noqa: BLE001 - a value that cannot be read has changed
            return False


def _cell_reader(cell):
    def read():
        try:
            return cell.cell_contents
        except ValueError:
            return _MISSING
    return read


def build_guard(recorder: Recorder) -> tuple[list[Check], list[Check]]:
    """``(per_call, on_version_move)`` checks for what ``recorder`` saw.

    ``per_call`` holds globals, closure cells and mutable attributes (lists, dicts, plain
    objects): they can change without any counter noticing. ``on_version_move`` holds the
    immutable attributes forward read: only an assignment, which moves
    ``STRUCTURE_VERSION``, can change those."""
    per_call: list[Check] = []
    on_move: list[Check] = []
    seen: set = set()  # (globals dict, name): several code objects may read one global
    for code, glb in recorder.codes.items():
        for name in _global_names(code):
            if (id(glb), name) in seen:
                continue
            seen.add((id(glb), name))
            if name in glb:
                value = glb[name]
                if isinstance(value, types.ModuleType):
                    continue  # `torch`, `F`, `np`: rebinding a module is not guarded
                expected = fingerprint(value)
            elif hasattr(builtins, name):
                expected = fingerprint(_MISSING)  # a builtin now; a global would shadow it
            else:
                continue
            per_call.append(Check(f"global {name!r} ({code.co_filename})",
                                  (lambda g, n: lambda: g.get(n, _MISSING))(glb, name),
                                  expected))
        for name, cell in _closure_cells(code):
            if isinstance(_cell_reader(cell)(), types.ModuleType):
                continue  # as for globals (autograph's ``__ag`` helpers among them)
            per_call.append(Check(f"closure variable {name!r} of {code.co_name}",
                                  _cell_reader(cell), fingerprint(_cell_reader(cell)())))
    for module, name, where in recorder.attrs.values():
        read = ((lambda m, n: lambda: m.__dict__.get(n, _MISSING))(module, name)
                if where == "instance" else
                (lambda c, n: lambda: getattr(c, n, _MISSING))(type(module), name))
        value = read()
        check = Check(f"attribute {name!r} of {type(module).__name__}", read,
                      fingerprint(value))
        (on_move if _immutable(value) else per_call).append(check)
    return per_call, on_move


def first_failure(checks) -> str:
    """The description of the first check that no longer holds, or ''."""
    for check in checks:
        if not check.holds():
            return check.what
    return ""


# ---- finding pre-existing tensors and arrays -------------------------------------------------

class ObjectIndex:
    """Where tensors and arrays that existed before a trace live: module attributes
    (including inside lists, dicts and plain objects), globals and closure cells of the
    user's code. Built lazily, bounded in size."""

    LIMIT = 20000

    def __init__(self):
        self.paths: dict[int, str] = {}
        self._seen: set[int] = set()
        self._visited = 0

    def add_root(self, value, path: str) -> None:
        """Index ``value`` and everything reachable from it (bounded depth and count)."""
        self._walk(value, path, 0)

    def _walk(self, value, path, depth):
        if self._visited >= self.LIMIT or isinstance(value, _SIMPLE) or isinstance(
                value, _IDENTITY):
            return
        key = id(value)
        if key in self._seen:
            return
        self._seen.add(key)
        self._visited += 1
        if _is_tensor_like(value):
            self.paths.setdefault(key, path)
            data = getattr(value, "_data", None)
            if data is not None:
                self.paths.setdefault(id(data), path)
            return
        if depth >= 4 or _is_module(value):
            return
        if type(value) in (list, tuple) or isinstance(value, tuple):
            for i, v in enumerate(value):
                self._walk(v, f"{path}[{i}]", depth + 1)
        elif type(value) is dict:
            for k, v in list(value.items()):
                self._walk(v, f"{path}[{k!r}]", depth + 1)
        else:
            state = getattr(value, "__dict__", None)
            if isinstance(state, dict):
                for k, v in list(state.items()):
                    self._walk(v, f"{path}.{k}", depth + 1)

    def find(self, obj) -> str | None:
        """The path at which ``obj`` (or its array) was found, else None."""
        return self.paths.get(id(obj))
