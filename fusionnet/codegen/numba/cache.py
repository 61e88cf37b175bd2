"""numba's on-disk cache, with every file checked before it is trusted.

numba reads its cache files (``.nbi`` index, ``.nbc`` machine code) with ``pickle`` and
lets any error escape the call being compiled, so one truncated file made a model run
eagerly in every later process. Here each file carries a SHA-256 of its own content;
it is verified before anything in it is unpickled, and a file that fails (truncated,
emptied, garbage, edited) is deleted, with one :class:`CompileCacheWarning`, and
numba compiles afresh and rewrites it. The files are named ``<numba's name>.checked``
so that plain numba cache files are never read as ours, nor ours by plain numba.

``install(module)`` gives every numba function defined in ``module`` this cache (the
generated modules and ``kernels/numba_kernels.py`` are written without ``cache=True``
for that reason; ``loader.py`` and ``fusionnet._kernels`` call it). Where numba finds no
writable place for a cache, the function is compiled in memory, with one warning.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import threading
import warnings

from numba.core.caching import FunctionCache, IndexDataCacheFile
from numba.core.dispatcher import Dispatcher

from ..backend import CompileCacheWarning

__all__ = ["install", "warn_once"]

_MAGIC = b"fusionnet checked numba cache 1\n"
_DIGEST = 32  # bytes of SHA-256
_SUFFIX = ".checked"

_warned: set = set()
_warned_lock = threading.Lock()


def warn_once(key, message: str) -> None:
    """One :class:`CompileCacheWarning` per ``key`` per process."""
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(f"fusionnet: {message}", CompileCacheWarning, stacklevel=3)


class DamagedCacheFile(Exception):
    """A cache file's content does not match the checksum it carries."""


def seal(payload: bytes) -> bytes:
    """``payload`` behind a header and its SHA-256."""
    return _MAGIC + hashlib.sha256(payload).digest() + payload


def unseal(blob: bytes) -> bytes:
    """The payload of a sealed ``blob``; :class:`DamagedCacheFile` unless it verifies."""
    head = len(_MAGIC) + _DIGEST
    if len(blob) < head or not blob.startswith(_MAGIC):
        raise DamagedCacheFile("truncated, empty or not a fusionnet cache file")
    payload = blob[head:]
    if hashlib.sha256(payload).digest() != blob[len(_MAGIC):head]:
        raise DamagedCacheFile("content does not match its checksum")
    return payload


def _discard(path: str, why) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:  # cannot delete it: it is ignored all the same, and overwritten later
        pass
    warn_once(("damaged", path), f"discarded a damaged compile-cache file {path} ({why}); "
                                 "it is compiled again and rewritten")


class CheckedCacheFile(IndexDataCacheFile):
    """numba's index and data files, each sealed with a checksum (see module docstring)."""

    def _load_index(self):
        try:
            with open(self._index_path, "rb") as fh:
                blob = fh.read()
        except FileNotFoundError:
            return {}
        except OSError as err:  # unreadable: as good as absent (a later save replaces it)
            warn_once(("unreadable", self._index_path), f"cannot read the compile-cache file "
                      f"{self._index_path} ({err}); compiling instead")
            return {}
        try:
            version, stamp, overloads = pickle.loads(unseal(blob))
        except Exception as err:  # noqa: BLE001 - any failure means "damaged"
            _discard(self._index_path, err)
            return {}
        if version != self._version or stamp != self._source_stamp:
            return {}  # another numba or another source: stale, overwritten on save
        return overloads

    def _save_index(self, overloads):
        blob = seal(self._dump((self._version, self._source_stamp, overloads)))
        with self._open_for_write(self._index_path) as fh:
            fh.write(blob)

    def _load_data(self, name):
        path = self._data_path(name)
        with open(path, "rb") as fh:  # OSError: numba treats the entry as missing
            blob = fh.read()
        try:
            return pickle.loads(unseal(blob))
        except Exception as err:  # noqa: BLE001
            _discard(path, err)
            return None  # a cache miss: numba compiles and overwrites this file

    def _save_data(self, name, data):
        blob = seal(self._dump(data))
        with self._open_for_write(self._data_path(name)) as fh:
            fh.write(blob)


class CheckedFunctionCache(FunctionCache):
    """numba's per-function cache over :class:`CheckedCacheFile`; a load that still fails
    (a verified file numba cannot rebuild) discards the function's files and compiles, and
    a save that cannot write warns once instead of failing the compile."""

    def __init__(self, py_func):
        super().__init__(py_func)
        plain = self._cache_file
        self._cache_file = CheckedCacheFile(plain._cache_path,
                                            self._impl.filename_base + _SUFFIX,
                                            plain._source_stamp)

    def load_overload(self, sig, target_context):
        """The cached compile result for ``sig``, or None (compile) if none can be used."""
        try:
            return super().load_overload(sig, target_context)
        except Exception as err:  # noqa: BLE001 - never let a cache file fail a compile
            self._purge(err)
            return None

    def save_overload(self, sig, data):
        """Store a compile result; a cache that cannot be written only costs a recompile."""
        try:
            super().save_overload(sig, data)
        except OSError as err:
            warn_once(("unwritable", self._cache_path), f"cannot write numba's cache in "
                      f"{self._cache_path} ({err}); functions are compiled in memory")

    def _purge(self, why) -> None:
        files = self._cache_file
        prefix = os.path.basename(files._index_path)[:-len(".nbi")]
        try:
            names = os.listdir(self._cache_path)
        except OSError:
            names = []
        for name in names:
            if name.startswith(prefix) and name.endswith((".nbi", ".nbc")):
                _discard(os.path.join(self._cache_path, name), why)


def install(module) -> None:
    """Give every numba function defined in ``module`` the checked on-disk cache."""
    for value in vars(module).values():
        if not isinstance(value, Dispatcher) or value.py_func.__module__ != module.__name__:
            continue
        try:
            value._cache = CheckedFunctionCache(value.py_func)
        except (RuntimeError, OSError) as err:  # numba found no writable place for it
            warn_once(("no cache", module.__name__), f"numba cannot cache the functions of "
                      f"{module.__name__} ({err}); they are compiled in memory")
