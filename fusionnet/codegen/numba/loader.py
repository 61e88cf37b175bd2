"""The compile cache folder: generated modules are written there, verified and executed.

A generated module is written to the compile cache (``FUSIONNET_CACHE_DIR``, default
``~/.cache/fusionnet``) as ``fusionnet_gen_<hash of its content>.py``; its functions use
numba's on-disk cache (``cache.py``), so a second process loads the machine code instead
of compiling. Nothing read back is trusted: a module file whose content is not what its
name says is rewritten, a damaged numba cache file is discarded and rebuilt (each with
one warning), and a cache folder that cannot be written is replaced, for the process, by
a private temporary one (one warning).
"""
from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import types

__all__ = ["load", "cache_dir"]

_IMPORT_LOCK = threading.Lock()


def cache_dir() -> str:
    """Where generated modules and numba's cache files go."""
    default = os.path.join(os.path.expanduser("~"), ".cache", "fusionnet")
    return os.environ.get("FUSIONNET_CACHE_DIR", default)


_usable: dict = {}  # configured cache folder -> the folder this process writes to (or None)


def load(source: str):
    """The module for generated ``source``: imported once per process (it is named by the
    hash of its content), from the cache folder, its numba functions cached on disk."""
    modname = "fusionnet_gen_" + hashlib.sha256(source.encode()).hexdigest()[:20]
    with _IMPORT_LOCK:
        module = sys.modules.get(modname)
        if module is None:
            module = _load(modname, source)
    return module


def _load(modname: str, source: str):
    """Write (or verify) the module file in the cache folder and execute it; numba's files
    get the checked cache. An unwritable folder is replaced by a private one; if none can
    be made, the module is compiled in memory, without a disk cache."""
    from . import cache  # noqa: PLC0415 - imports numba

    folder, path = _writable_folder(), None
    while folder is not None:
        path = os.path.join(folder, modname + ".py")
        try:
            _ensure_source(path, source)
            break
        except OSError as err:  # it stopped being writable: the private folder, or memory
            folder, path = _fail_over(folder, err), None
            _usable[cache_dir()] = folder
    # Executed from the verified text, not through the import system: a stale or damaged
    # __pycache__/*.pyc next to the file is never read.
    code = compile(source, path or f"<fusionnet generated {modname}>", "exec")
    module = types.ModuleType(modname)
    module.__file__ = path or "<in memory>"
    # Registered under its own name: numba rebuilds a cached function's globals by
    # importing the function's module by name (numba.core.environment._rebuild_env).
    sys.modules[modname] = module
    try:
        exec(code, module.__dict__)  # noqa: S102 - our own generated source
    except BaseException:
        del sys.modules[modname]
        raise
    if path is not None:
        cache.install(module)
    return module


def _ensure_source(path: str, source: str) -> None:
    """Make ``path`` hold exactly ``source``. Its name is the hash of that content, so any
    other content (truncated, emptied, edited) is damage: rewrite it and say so once."""
    data = source.encode()
    try:
        with open(path, "rb") as fh:
            if fh.read() == data:
                return
        damaged = True
    except FileNotFoundError:
        damaged = False
    except OSError:  # unreadable (a folder of that name...): rewrite, or fail over
        damaged = True
    # Write then rename: another process may be writing the same file.
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if damaged:
        from .cache import warn_once  # noqa: PLC0415
        warn_once(("module", path), f"the generated module {path} did not match its name "
                                    "(damaged or edited); it was rewritten")


def _writable_folder() -> str | None:
    """The cache folder, once per process checked to be writable; else a private one."""
    folder = cache_dir()
    if folder not in _usable:
        try:
            os.makedirs(folder, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()
            _usable[folder] = folder
        except OSError as err:
            _usable[folder] = _private_folder(folder, err)
    return _usable[folder]


_private: list = []  # this process's temporary cache folder, made on first need


def _fail_over(folder: str, err: OSError) -> str | None:
    """Where to write after writing to ``folder`` failed: the private folder, else memory."""
    if not _private or folder != _private[0]:
        return _private_folder(folder, err)
    from .cache import warn_once  # noqa: PLC0415

    warn_once(("unwritable", folder), f"cannot write the temporary compile folder {folder} "
                                      f"({err}); compiling in memory instead")
    return None


def _private_folder(folder: str, err: OSError) -> str | None:
    from .cache import warn_once  # noqa: PLC0415

    if not _private:
        try:
            _private.append(tempfile.mkdtemp(prefix="fusionnet-cache-"))
            atexit.register(shutil.rmtree, _private[0], ignore_errors=True)
        except OSError:
            _private.append(None)
    where = (f"in the temporary folder {_private[0]} for this process" if _private[0]
             else "in memory")
    warn_once(("unwritable", folder), f"the compile cache folder {folder} cannot be written "
              f"({err}); compiling {where} instead (set FUSIONNET_CACHE_DIR to a writable "
              "folder to keep compiled code between processes)")
    return _private[0]
