"""The compile cache never breaks a model: an unwritable cache folder, a damaged or edited
generated module and damaged numba cache files each cost one warning and a rebuild, and
the results stay right. Every case runs in fresh processes over a temporary cache."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap

import pytest

# Runs the models named on the command line (one per scale k, each its own generated
# module because k is baked in as a literal) and prints, per model, whether fused equals
# eager, whether it compiled, its module file, numba's cache counters for its driver and
# the warnings its first two calls gave.
SCRIPT = textwrap.dedent("""
    import json, os, sys, warnings
    import numpy as np
    import fusionnet as fn
    from fusionnet import nn

    class Scaled(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x):
            return (x * self.k + 1.0).sigmoid()

    x = fn.from_numpy(np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4))
    report = []
    for arg in sys.argv[1:]:
        folder, _, k = arg.rpartition("@")
        if folder == "HOME":
            os.environ.pop("FUSIONNET_CACHE_DIR", None)
        elif folder:
            os.environ["FUSIONNET_CACHE_DIR"] = folder
        block = Scaled(float(k))
        fused = fn.fuse(block)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fn.no_grad():
                outs = [fused(x), fused(x * 2)]
                want = [block(x), block(x * 2)]
        entry = next(iter(fused._fusion_runner.exact.values()))
        report.append({
            "k": k,
            "ok": all(np.allclose(o.numpy(), w.numpy(), rtol=1e-6) for o, w in zip(outs, want)),
            "compiled": entry.fn is not None,
            "path": entry.compiled.path if entry.compiled else None,
            "stats": entry.compiled.compile_stats() if entry.compiled else None,
            "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
        })
    print(json.dumps(report))
""")


def _run(tmp_path, args, **env):
    script = tmp_path / "models.py"
    script.write_text(SCRIPT)
    full = dict(os.environ)
    full.update(env)
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True,
                          text=True, timeout=600, env=full)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {r["k"]: r for r in json.loads(proc.stdout.strip().splitlines()[-1])}


def _cache_warnings(result):
    return [w for w in result["warnings"] if w.startswith("CompileCacheWarning")]


def test_unwritable_cache_folders_compile_privately_with_one_warning(tmp_path):
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    # HOME unwritable (under /proc) with the default cache folder; then a path that is a
    # file; then a folder under /proc; then the file again (already warned about).
    args = ["HOME@2.0", f"{a_file}@3.0", "/proc/fusionnet-cache-test@4.0", f"{a_file}@5.0"]
    env = {"HOME": "/proc/fusionnet-readonly-home", "FUSIONNET_CACHE_DIR": str(a_file)}
    report = _run(tmp_path, args, **env)
    for k, folder in [("2.0", "/proc/fusionnet-readonly-home/.cache/fusionnet"),
                      ("3.0", str(a_file)), ("4.0", "/proc/fusionnet-cache-test")]:
        r = report[k]
        assert r["ok"] and r["compiled"], r
        (warning,) = r["warnings"]  # exactly one, and not a fallback to eager
        assert warning.startswith("CompileCacheWarning") and folder in warning, warning
        assert "cannot be written" in warning
        assert not r["path"].startswith(folder)
    assert report["5.0"]["ok"] and report["5.0"]["compiled"]
    assert report["5.0"]["warnings"] == []


def _numba_files(numba_dir, module_path, function):
    name = os.path.basename(module_path)[:-3]
    found = glob.glob(os.path.join(numba_dir, "**", f"{name}.{function}-*"), recursive=True)
    return sorted(found)


def _truncate(path):
    with open(path, "rb") as fh:
        data = fh.read()
    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 2])


def _empty(path):
    open(path, "wb").close()


def _garbage(path):
    size = os.path.getsize(path)
    with open(path, "wb") as fh:
        fh.write(os.urandom(max(size, 64)))


def test_damaged_cache_files_are_rebuilt_once_and_never_trusted(tmp_path):
    cache, numba_dir = tmp_path / "cache", tmp_path / "numba"
    env = {"FUSIONNET_CACHE_DIR": str(cache), "NUMBA_CACHE_DIR": str(numba_dir)}
    first = _run(tmp_path, [f"{k}.0" for k in range(1, 8)], **env)
    assert all(r["ok"] and r["compiled"] and not r["warnings"] for r in first.values()), first
    path = {k[:-2]: r["path"] for k, r in first.items()}

    def nb(k, ext):
        (hit,) = [f for f in _numba_files(numba_dir, path[k], "forward") if f.endswith(ext)]
        return hit

    damaged = {
        "1": (path["1"], _truncate),          # the generated module, truncated
        "2": (path["2"], _empty),             # ... emptied
        "4": (nb("4", ".nbi"), _truncate),    # numba's index of the driver, truncated
        "5": (nb("5", ".nbc"), _garbage),     # the driver's machine code, garbage
        "6": (nb("6", ".nbc"), _empty),       # ... emptied
    }
    for target, damage in damaged.values():
        damage(target)
    # An edited but valid module: it would multiply by 30 instead of 3.
    source = open(path["3"]).read()
    assert "np.float32(3.0)" in source
    with open(path["3"], "w") as fh:
        fh.write(source.replace("np.float32(3.0)", "np.float32(30.0)"))
    damaged["3"] = (path["3"], None)
    # A hand-written kernel's cache (stable_sigmoid, under NUMBA_CACHE_DIR): read when a
    # new module (k = 8) is compiled.
    (kernel_nbc,) = glob.glob(str(numba_dir / "**" / "numba_kernels.stable_sigmoid-*.nbc"),
                              recursive=True)
    _garbage(kernel_nbc)
    damaged["8"] = (kernel_nbc, None)

    second = _run(tmp_path, [f"{k}.0" for k in range(1, 9)], **env)
    for k, r in second.items():
        assert r["ok"] and r["compiled"], r  # right answers, and compiled, never eager
        warned = _cache_warnings(r)
        assert len(warned) == len(r["warnings"]), r["warnings"]  # nothing but cache warnings
        if k[:-2] in damaged:
            (warning,) = warned  # said once
            assert damaged[k[:-2]][0] in warning, warning
        else:
            assert warned == [], warned

    third = _run(tmp_path, [f"{k}.0" for k in range(1, 9)], **env)
    for r in third.values():  # everything was rebuilt: silent, and loaded from the cache
        assert r["ok"] and r["compiled"] and r["warnings"] == [], r
        assert r["stats"] == {"cache_hits": 1, "cache_misses": 0}, r


def test_checked_cache_file_rejects_damage():
    pytest.importorskip("numba")
    from fusionnet.codegen.numba.cache import DamagedCacheFile, seal, unseal

    blob = seal(b"payload")
    assert unseal(blob) == b"payload"
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    for bad in (b"", blob[: len(blob) // 2], flipped, b"\x80\x04garbage" * 8):
        with pytest.raises(DamagedCacheFile):
            unseal(bad)


def test_without_any_writable_folder_modules_compile_in_memory(tmp_path, monkeypatch):
    import tempfile
    import warnings

    import numpy as np

    import fusionnet as fn
    from fusionnet.codegen.numba import loader
    from fusionnet.codegen.backend import CompileCacheWarning

    def no_temp(*args, **kwargs):
        raise PermissionError("no temporary folder here")

    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    monkeypatch.setenv("FUSIONNET_CACHE_DIR", str(a_file))
    monkeypatch.setattr(loader, "_usable", {})
    monkeypatch.setattr(loader, "_private", [])
    monkeypatch.setattr(tempfile, "mkdtemp", no_temp)
    x = fn.from_numpy(np.linspace(-2, 2, 6, dtype=np.float32))
    block = fn.nn.Module()
    block.forward = lambda t: (t * 1.2345 - 0.5).tanh()
    fused = fn.fuse(block, fallback=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = [fused(x), fused(x)]
    messages = [str(w.message) for w in caught if w.category is CompileCacheWarning]
    assert len(messages) == 1 and "in memory" in messages[0], messages
    entry = next(iter(fused._fusion_runner.exact.values()))
    assert entry.compiled.path == "<in memory>"
    for g in got:
        np.testing.assert_allclose(g.numpy(), np.tanh(x.numpy() * np.float32(1.2345) - 0.5),
                                   rtol=1e-6)
