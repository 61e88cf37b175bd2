"""Autograph: compile data-dependent ``while`` / ``if`` instead of breaking the graph.

When a trace meets ``bool()`` of a traced value inside a module's ``forward``, the
tracer raises :class:`ConversionNeeded`; :func:`fusionnet.trace` then converts that
statement of that ``forward`` (``convert.py``), installs the converted forward on every
instance of the class in the traced module tree for the duration of the trace, and
traces again. The converted statements call ``helpers.py``, and the tracer records
``while`` / ``cond`` regions (``record.py``). What was learned (which lines of which
function need converting) is remembered per function, so later traces of the same
class (probe traces, other signatures) convert up front.
"""
from __future__ import annotations

import threading
import types
import weakref
from contextlib import contextmanager

from .convert import ConversionError, Converted, convert

__all__ = ["ConversionNeeded", "ConversionError", "Converted", "Conversions"]

_lock = threading.Lock()
#: original function -> set of lines (in its file) whose statements need converting
_KNOWN: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
#: original function -> {frozenset(lines): Converted}
_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class ConversionNeeded(Exception):
    """Tracing asked a traced value for ``bool()`` at ``line`` of ``fn``: convert and retry."""

    def __init__(self, fn, line: int):
        super().__init__(f"{fn.__qualname__} line {line}")
        self.fn, self.line = fn, line


def _codes(code):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


class Conversions:
    """The converted forwards of one trace: which function a running code belongs to,
    and installing the converted forwards on the module tree."""

    def __init__(self, module):
        self.module = module
        self.by_code: dict = {}       # code object -> original function
        self.installed: dict = {}     # original function -> Converted
        for m in module.modules():
            fn = getattr(type(m), "forward", None)
            if isinstance(fn, types.FunctionType):
                self.by_code[fn.__code__] = fn

    def function_of(self, code):
        """The original ``forward`` that ``code`` is (or is part of a conversion of)."""
        return self.by_code.get(code)

    def learn(self, fn, line: int) -> None:
        """Remember that ``line`` of ``fn`` needs converting."""
        with _lock:
            _KNOWN.setdefault(fn, set()).add(line)

    @contextmanager
    def installed_forwards(self, enabled: bool = True):
        """Install the converted forwards the known lines call for; remove them after."""
        patched = []
        try:
            for m in (self.module.modules() if enabled else ()):
                fn = getattr(type(m), "forward", None)
                lines = _KNOWN.get(fn) if isinstance(fn, types.FunctionType) else None
                if not lines or "forward" in m.__dict__:
                    continue
                conv = self._converted(fn, frozenset(lines))
                object.__setattr__(m, "forward", types.MethodType(conv.fn, m))
                patched.append(m)
            yield self
        finally:
            for m in patched:
                m.__dict__.pop("forward", None)

    def _converted(self, fn, lines) -> Converted:
        conv = _CACHE.get(fn, {}).get(lines)
        if conv is None:
            conv = convert(fn, lines)
            with _lock:
                _CACHE.setdefault(fn, {})[lines] = conv
        self.installed[fn] = conv
        for code in _codes(conv.fn.__code__):
            self.by_code[code] = fn
        return conv

    def sources(self) -> dict:
        """``{qualified name: converted source}`` of what this trace installed."""
        return {fn.__qualname__: conv.source for fn, conv in self.installed.items()}
