"""``save`` and ``load``: tensors, containers and ``state_dict()`` s in a file safe to open.

A file is a ZIP archive whose members are all stored uncompressed:

* ``manifest.json``: ``{"format": "fusionnet", "version": 1, "created_by": ...,
  "tensors": [...], "root": ...}``: the object tree, with tensors by index;
* ``data/<i>.npy``: tensor ``i`` as a C-ordered, little-endian ``.npy`` file.

Loading never unpickles, imports or calls anything the file names: the
manifest is JSON read into a fixed set of node types, and each ``.npy``
header is checked against an allow-list of dtypes and the manifest's shape
before any data is read. Any problem raises :class:`SerializationError`
naming the file. See docs/saving-and-devices.md for the format and limits.
"""
from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import secrets
import struct
import sys
import zipfile
from collections import OrderedDict
from typing import Any, BinaryIO

import numpy as np

from .device import as_device, device
from .dtypes import as_dtype, dtype
from .tensor import Size, Tensor

__all__ = ["save", "load", "SerializationError", "FORMAT", "VERSION"]

FORMAT = "fusionnet"
VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 * 2**20  # a state_dict of ~100k tensors needs well under this
MAX_TENSORS = 1_000_000
MAX_DEPTH = 100  # nesting of containers; keeps every recursion far from Python's limit
MAX_NDIM = 64
MAX_NPY_HEADER = 64 * 2**10
#: dtype name -> the only ``.npy`` descr accepted for it (little-endian, fixed width).
DTYPES = {"float32": "<f4", "float64": "<f8", "int32": "<i4", "int64": "<i8", "bool": "|b1"}
_ENTRY_KEYS = {"dtype", "shape", "device", "requires_grad", "parameter"}
_TOP_KEYS = {"format", "version", "created_by", "tensors", "root"}
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member dates: the same object gives the same bytes


class SerializationError(RuntimeError):
    """A file could not be saved or loaded; the message names the file and the problem."""


# ---- saving --------------------------------------------------------------------------------

def save(obj: Any, f: str | os.PathLike | BinaryIO) -> None:
    """Save ``obj`` (a tensor, list, tuple, dict, ``state_dict()``, number, str...) to ``f``.

    ``f`` is a path (written atomically: a crash or error mid-save leaves any
    earlier file intact) or a binary file object open for writing.
    """
    where = _describe(f)
    enc = _Encoder(where)
    root = enc.node(obj, "obj", 0)
    manifest = {"format": FORMAT, "version": VERSION, "created_by": _created_by(),
                "tensors": enc.entries, "root": root}
    try:
        text = json.dumps(manifest, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except ValueError as err:  # e.g. an int too long to print
        raise SerializationError(f"cannot save to {where}: {err}") from None
    if len(text) > MAX_MANIFEST_BYTES:
        raise SerializationError(f"cannot save to {where}: the object tree needs a "
                                 f"{len(text)}-byte manifest, over the {MAX_MANIFEST_BYTES} "
                                 "byte limit that load() enforces")
    payload = text.encode("ascii")
    if _is_file_object(f):
        _write_zip(f, payload, enc.tensors)
    else:
        _atomic_write(os.fsdecode(os.fspath(f)), lambda fh: _write_zip(fh, payload, enc.tensors))


class _Encoder:
    """Turns an object tree into manifest nodes, collecting its tensors (each once)."""

    def __init__(self, where: str):
        self.where = where
        self.tensors: list[Tensor] = []
        self.entries: list[dict] = []
        self._index: dict[int, int] = {}
        self._open: set[int] = set()  # containers on the current path, to catch cycles

    def error(self, at: str, what: str) -> SerializationError:
        return SerializationError(f"cannot save to {self.where}: {at} {what}")

    def node(self, obj, at: str, depth: int) -> dict:
        if depth > MAX_DEPTH:
            raise self.error(at, f"is nested more than {MAX_DEPTH} containers deep")
        if isinstance(obj, Tensor):
            return {"type": "tensor", "index": self.tensor(obj, at)}
        scalar = _scalar_node(obj)
        if scalar is not None:
            return scalar
        if not isinstance(obj, (list, tuple, dict)):
            raise self.error(at, f"is a {type(obj).__module__}.{type(obj).__qualname__}; "
                             "only tensors, lists, tuples, dicts, numbers, str, bool, None, "
                             "dtypes and devices can be saved")
        if id(obj) in self._open:
            raise self.error(at, "contains itself (a reference cycle)")
        self._open.add(id(obj))
        try:
            if isinstance(obj, dict):
                kind = "ordereddict" if isinstance(obj, OrderedDict) else "dict"
                items = []
                for k, v in obj.items():
                    key = _scalar_node(k)
                    if key is None or key["type"] in ("dtype", "device"):
                        raise self.error(at, f"has a key of type {type(k).__name__}; keys "
                                         "must be str, int, float, bool or None")
                    items.append([key, self.node(v, f"{at}[{k!r}]", depth + 1)])
                return {"type": kind, "items": items}
            kind = "size" if isinstance(obj, Size) else (
                "tuple" if isinstance(obj, tuple) else "list")
            return {"type": kind, "items": [self.node(v, f"{at}[{i}]", depth + 1)
                                            for i, v in enumerate(obj)]}
        finally:
            self._open.discard(id(obj))

    def tensor(self, t: Tensor, at: str) -> int:
        if id(t) in self._index:  # the same tensor twice (tied weights) is stored once
            return self._index[id(t)]
        try:
            data = t._data
        except RuntimeError as err:  # e.g. an uninitialised lazy parameter
            raise self.error(at, f"cannot be saved: {err}") from None
        name = as_dtype(data.dtype).name
        if name not in DTYPES:
            raise self.error(at, f"has dtype {name}; savable dtypes are {sorted(DTYPES)}")
        nn_param = sys.modules.get("fusionnet.nn.parameter")  # loaded if a Parameter exists
        is_param = nn_param is not None and isinstance(t, nn_param.Parameter)
        self._index[id(t)] = len(self.tensors)
        self.tensors.append(t)
        self.entries.append({"dtype": name, "shape": list(data.shape), "device": str(t.device),
                             "requires_grad": bool(t.requires_grad), "parameter": is_param})
        return self._index[id(t)]


def _scalar_node(obj) -> dict | None:
    """The node for a plain value, or None when ``obj`` is not one."""
    if obj is None:
        return {"type": "none"}
    if isinstance(obj, (bool, np.bool_)):
        return {"type": "bool", "value": bool(obj)}
    if isinstance(obj, (int, np.integer)):
        return {"type": "int", "value": int(obj)}
    if isinstance(obj, (float, np.floating)):
        # float.hex round-trips every double exactly, inf and nan included; JSON can't.
        return {"type": "float", "value": float(obj).hex()}
    if isinstance(obj, str):
        return {"type": "str", "value": str(obj)}
    if isinstance(obj, dtype):
        return {"type": "dtype", "value": obj.name}
    if isinstance(obj, device):
        return {"type": "device", "value": str(obj)}
    return None


def _write_zip(fh: BinaryIO, manifest: bytes, tensors: list[Tensor]) -> None:
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr(zipfile.ZipInfo(MANIFEST, _ZIP_EPOCH), manifest)
        for i, t in enumerate(tensors):
            _write_tensor(zf, f"data/{i}.npy", t)


def _write_tensor(zf: zipfile.ZipFile, name: str, t: Tensor) -> None:
    """Write one tensor as a ``.npy`` member (streamed: no second copy of the data)."""
    arr = t._host()
    if not arr.flags.c_contiguous:  # (np.ascontiguousarray would turn 0-d into 1-d)
        arr = arr.copy(order="C")
    arr = arr.astype(np.dtype(DTYPES[as_dtype(arr.dtype).name]), copy=False)
    with zf.open(zipfile.ZipInfo(name, _ZIP_EPOCH), "w",
                 force_zip64=arr.nbytes >= 2**31 - 2**20) as out:
        np.lib.format.write_array(out, arr, allow_pickle=False)


def _atomic_write(path: str, write) -> None:
    """Run ``write(fh)`` on a temporary file next to ``path``, then move it into place."""
    path = os.path.realpath(path)  # write through a symlink instead of replacing it
    directory, base = os.path.split(path)
    if os.path.isdir(path):
        raise SerializationError(f"cannot save to '{path}': it is a directory")
    try:
        tmp, fd = _open_temp(directory, base)
    except OSError as err:
        raise SerializationError(f"cannot save to '{path}': {err.strerror or err}") from err
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())  # the data must be on disk before the rename makes it live
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise SerializationError(f"cannot save to '{path}': {err}") from err
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX only)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _open_temp(directory: str, base: str) -> tuple[str, int]:
    # Our own O_EXCL file rather than mkstemp: mode 0o666 lets the umask decide the final
    # permissions, as a plain open() would, where mkstemp would leave them at 0o600.
    while True:
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue


def _created_by() -> str:
    from . import __version__  # noqa: PLC0415 - the package imports this module
    return f"fusionnet {__version__}"


# ---- loading -------------------------------------------------------------------------------

def load(f: str | os.PathLike | BinaryIO, map_location=None) -> Any:
    """Load what :func:`save` wrote to ``f`` (a path or a binary file object).

    ``map_location`` puts the tensors on a device: None (the device each was
    saved from), ``'cpu'``, ``'cuda'``, ``'cuda:N'``, a :class:`fusionnet.device`,
    or a dict from saved device names to devices (e.g. ``{'cuda:1': 'cuda:0'}``).
    Raises :class:`SerializationError` for a missing, truncated, corrupted,
    foreign or too-new file, and when a tensor's device is not available here.
    """
    mapping = _check_map_location(map_location)
    where = _describe(f)
    try:
        with _open_source(f, where) as src:
            return _Reader(src, where, mapping).read()
    except SerializationError:
        raise
    except RecursionError:
        raise SerializationError(f"{where} is corrupted: it nests too deeply") from None
    except Exception as err:  # noqa: BLE001 - whatever a damaged file triggers, say so clearly
        raise SerializationError(f"{where} is corrupted or not a fusionnet file "
                                 f"({type(err).__name__}: {err})") from err


def _check_map_location(map_location):
    if map_location is None or isinstance(map_location, (str, device)):
        return map_location if map_location is None else device(map_location)
    if isinstance(map_location, dict):
        return {str(device(k)): device(v) for k, v in map_location.items()}
    raise TypeError("load(): map_location must be None, a device, a str like 'cpu' or "
                    f"'cuda:0', or a dict of them, not {type(map_location).__name__}")


@contextlib.contextmanager
def _open_source(f, where: str):
    if _is_file_object(f):
        seekable = getattr(f, "seekable", None)
        yield f if seekable is not None and seekable() else io.BytesIO(f.read())
        return
    path = os.fspath(f)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise SerializationError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise SerializationError(f"{where} is a directory, not a fusionnet file") from None
    except OSError as err:
        raise SerializationError(f"cannot open {where}: {err.strerror or err}") from None
    with fh:
        yield fh


class _Reader:
    """Reads and checks one archive; builds nothing until everything has been checked."""

    def __init__(self, src: BinaryIO, where: str, mapping):
        self.src, self.where, self.mapping = src, where, mapping

    def fail(self, what: str) -> SerializationError:
        return SerializationError(f"{self.where}: {what}")

    def read(self):
        try:
            zf = zipfile.ZipFile(self.src)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
            raise self.fail("not a fusionnet file: it is not a ZIP archive, or it is "
                            f"truncated ({err})") from None
        with zf:
            self.zf = zf
            manifest = self.manifest()
            entries = self.entries(manifest["tensors"])
            _Tree(self, len(entries), None).build(manifest["root"], "root", 0)  # check only
            targets = [self.target(i, e) for i, e in enumerate(entries)]
            tensors = [self.tensor(i, e, d) for i, (e, d) in enumerate(zip(entries, targets))]
            return _Tree(self, len(entries), tensors).build(manifest["root"], "root", 0)

    def manifest(self) -> dict:
        infos = self.zf.infolist()
        if len(infos) > MAX_TENSORS + 1:
            raise self.fail(f"has {len(infos)} members, over the limit of {MAX_TENSORS + 1}")
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise self.fail("is corrupted: a ZIP member name appears twice")
        if MANIFEST not in names:
            raise self.fail(f"not a fusionnet file: a ZIP archive without {MANIFEST}")
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                raise self.fail(f"member {info.filename!r} is compressed or encrypted; "
                                "fusionnet files store members uncompressed")
        info = self.zf.getinfo(MANIFEST)
        if info.file_size > MAX_MANIFEST_BYTES:
            raise self.fail(f"{MANIFEST} is {info.file_size} bytes, over the limit of "
                            f"{MAX_MANIFEST_BYTES}")
        with self.zf.open(info) as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
        try:
            m = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys,
                           parse_constant=_no_constants)
        except (ValueError, UnicodeDecodeError) as err:
            raise self.fail(f"is corrupted: {MANIFEST} is not valid JSON ({err})") from None
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise self.fail(f"not a fusionnet file: {MANIFEST} does not say "
                            f"\"format\": \"{FORMAT}\"")
        version = m.get("version")
        if type(version) is not int or version < 1:
            raise self.fail(f"has a bad format version {version!r}")
        if version > VERSION:
            raise self.fail(f"was written by a newer fusionnet (file format version {version}); "
                            f"this fusionnet reads format version {VERSION}: upgrade fusionnet")
        unknown = set(m) - _TOP_KEYS
        missing = {"tensors", "root"} - set(m)
        if unknown or missing or not isinstance(m.get("created_by", ""), str):
            raise self.fail(f"is corrupted: bad {MANIFEST} fields (unknown {sorted(unknown)}, "
                            f"missing {sorted(missing)})")
        expected = {MANIFEST} | {f"data/{i}.npy" for i in range(_len(m["tensors"]))}
        extra = sorted(set(names) - expected)
        if extra:
            raise self.fail(f"has unexpected member {extra[0]!r}: a fusionnet file holds only "
                            f"{MANIFEST} and data/<i>.npy for each tensor")
        return m

    def entries(self, table) -> list[dict]:
        if not isinstance(table, list) or len(table) > MAX_TENSORS:
            raise self.fail(f"is corrupted: \"tensors\" must be a list of at most "
                            f"{MAX_TENSORS} entries")
        out = []
        for i, e in enumerate(table):
            bad = self.fail(f"is corrupted: tensor entry {i} is malformed: {e!r:.200}")
            if not isinstance(e, dict) or set(e) != _ENTRY_KEYS or e["dtype"] not in DTYPES:
                raise bad
            shape = e["shape"]
            if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(
                    type(s) is int and s >= 0 for s in shape):
                raise bad
            if type(e["requires_grad"]) is not bool or type(e["parameter"]) is not bool:
                raise bad
            if e["requires_grad"] and DTYPES[e["dtype"]][1] != "f":
                raise bad
            try:
                dev = device(e["device"]) if isinstance(e["device"], str) else None
            except (RuntimeError, TypeError):
                dev = None
            if dev is None:
                raise bad
            name = f"data/{i}.npy"
            try:
                info = self.zf.getinfo(name)
            except KeyError:
                raise self.fail(f"is truncated or corrupted: member {name} is missing") from None
            nbytes = np.dtype(DTYPES[e["dtype"]]).itemsize * _prod(shape)
            if nbytes > info.file_size:
                raise self.fail(f"is corrupted: tensor {i} has shape {shape} ({nbytes} bytes) "
                                f"but {name} holds only {info.file_size} bytes")
            out.append(dict(e, device=dev, nbytes=nbytes, info=info))
        return out

    def target(self, i: int, e: dict) -> device:
        """The device tensor ``i`` goes to; checked to exist before any data is read."""
        saved, m = e["device"], self.mapping
        want = m.get(str(saved), saved) if isinstance(m, dict) else (m or saved)
        try:
            return as_device(want)
        except RuntimeError as err:
            raise self.fail(f"tensor {i} was saved on {saved} and would load on {want}, "
                            f"but: {err}. Pass map_location='cpu' to load it on the "
                            "CPU") from None

    def tensor(self, i: int, e: dict, target: device) -> Tensor:
        arr = self.array(i, e)
        t = Tensor._wrap(arr)
        if target.type != "cpu":
            t = t.to(target)
        if e["parameter"]:
            try:
                # A fixed module, never one the file names.
                from .nn.parameter import Parameter  # noqa: PLC0415
            except ImportError:  # fusionnet.nn absent: a plain tensor still holds the values
                Parameter = None  # noqa: N806
            if Parameter is not None:
                return Parameter(t, requires_grad=e["requires_grad"])
        return t.requires_grad_(True) if e["requires_grad"] else t

    def array(self, i: int, e: dict) -> np.ndarray:
        info, name, shape = e["info"], f"data/{i}.npy", tuple(e["shape"])
        with self.zf.open(info) as fh:
            start = _read_exact(fh, 8)
            if start[:6] != b"\x93NUMPY" or start[6] not in (1, 2, 3):
                raise self.fail(f"is corrupted: {name} is not a .npy array")
            width = 2 if start[6] == 1 else 4
            hlen = struct.unpack("<H" if width == 2 else "<I", _read_exact(fh, width))[0]
            if hlen > MAX_NPY_HEADER:
                raise self.fail(f"is corrupted: {name} has a {hlen}-byte header, over the "
                                f"limit of {MAX_NPY_HEADER}")
            if 8 + width + hlen > info.file_size:
                raise self.fail(f"is corrupted: the header of {name} runs past its end")
            header = _npy_header(_read_exact(fh, hlen), start[6])
            descr = DTYPES[e["dtype"]]
            if header != {"descr": descr, "fortran_order": False, "shape": shape}:
                raise self.fail(f"is corrupted: {name} has header {header!r:.200}, expected "
                                f"descr {descr!r}, C order, shape {shape}")
            if 8 + width + hlen + e["nbytes"] != info.file_size:
                raise self.fail(f"is corrupted: {name} holds {info.file_size} bytes, not the "
                                f"{8 + width + hlen + e['nbytes']} its header implies")
            arr = np.empty(shape, dtype=np.dtype(descr))
            _read_into(fh, arr)
            if fh.read(1):  # also completes zipfile's CRC check of the member
                raise self.fail(f"is corrupted: {name} is longer than its header says")
        return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


class _Tree:
    """Builds objects from manifest nodes; with ``tensors=None`` it only checks them."""

    def __init__(self, reader: _Reader, n_tensors: int, tensors: list[Tensor] | None):
        self.r, self.n, self.tensors = reader, n_tensors, tensors

    def build(self, node, at: str, depth: int):
        bad = self.r.fail(f"is corrupted: bad node at {at}: {node!r:.200}")
        if depth > MAX_DEPTH:
            raise self.r.fail(f"is corrupted: nested more than {MAX_DEPTH} containers deep")
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            raise bad
        kind, keys = node["type"], set(node)
        if kind == "none":
            if keys != {"type"}:
                raise bad
            return None
        field = "index" if kind == "tensor" else "items" if kind in _CONTAINERS else "value"
        if keys != {"type", field}:
            raise bad
        v = node[field]
        if kind == "tensor":
            if type(v) is not int or not 0 <= v < self.n:
                raise bad
            return None if self.tensors is None else self.tensors[v]
        if kind in _SCALARS:
            return _scalar(kind, v, bad)
        if not isinstance(v, list):
            raise bad
        if kind in ("dict", "ordereddict"):
            out = OrderedDict() if kind == "ordereddict" else {}
            for pair in v:
                if not isinstance(pair, list) or len(pair) != 2 or not isinstance(
                        pair[0], dict) or pair[0].get("type") not in _KEY_TYPES:
                    raise bad
                key = self.build(pair[0], at, depth + 1)
                if key in out:
                    raise bad
                out[key] = self.build(pair[1], f"{at}[{key!r}]", depth + 1)
            return out
        items = [self.build(x, f"{at}[{i}]", depth + 1) for i, x in enumerate(v)]
        if kind == "size":
            if not all(type(x) is int for x in items):
                raise bad
            return Size(items)
        return tuple(items) if kind == "tuple" else items


_CONTAINERS = {"list", "tuple", "size", "dict", "ordereddict"}
_SCALARS = {"bool", "int", "float", "str", "dtype", "device"}
_KEY_TYPES = {"none", "bool", "int", "float", "str"}


def _scalar(kind: str, v, bad: SerializationError):
    """The value of a scalar node; raises ``bad`` when ``v`` does not fit ``kind``."""
    want = {"bool": bool, "int": int, "float": str, "str": str, "dtype": str, "device": str}
    if type(v) is not want[kind]:
        raise bad
    try:
        if kind == "float":
            return float.fromhex(v)
        if kind == "dtype":
            if v not in DTYPES:
                raise bad
            return as_dtype(v)
        if kind == "device":
            return device(v)
    except (ValueError, OverflowError, RuntimeError, TypeError):
        raise bad from None
    return v


# ---- helpers -------------------------------------------------------------------------------

def _is_file_object(f) -> bool:
    return hasattr(f, "read") or hasattr(f, "write")


def _describe(f) -> str:
    """How messages name ``f``: the path in quotes, or the file object's name."""
    if _is_file_object(f):
        name = getattr(f, "name", None)
        return f"'{name}'" if isinstance(name, str) else f"<{type(f).__name__} object>"
    if not isinstance(f, (str, bytes, os.PathLike)):
        raise TypeError(f"expected a path (str or os.PathLike) or a binary file object, got "
                        f"{type(f).__name__}")
    return f"'{os.fsdecode(os.fspath(f))}'"


def _len(x) -> int:
    return len(x) if isinstance(x, list) else 0


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a JSON object repeats a key")
    return dict(pairs)


def _no_constants(name):
    raise ValueError(f"non-standard JSON constant {name}")


def _read_exact(fh, n: int) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise EOFError(f"expected {n} bytes, got {len(data)}")
    return data


def _read_into(fh, arr: np.ndarray) -> None:
    view = memoryview(arr.reshape(-1).view(np.uint8))
    done = 0
    while done < len(view):
        n = fh.readinto(view[done:done + (64 << 20)])
        if not n:
            raise EOFError(f"array data ends after {done} of {len(view)} bytes")
        done += n


def _npy_header(raw: bytes, major: int) -> dict:
    """The dict literal of a ``.npy`` header, read with ``ast.literal_eval`` (no code runs)."""
    try:
        text = raw.decode("utf-8" if major == 3 else "latin1")
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError) as err:
        raise ValueError(f"unreadable .npy header ({type(err).__name__})") from None
    if not isinstance(header, dict):
        raise ValueError(".npy header is not a dict")
    return header
