"""The benchmark suite and ``fusionnet bench``: end to end on a tiny grid, skipped peers,
wrong results marked FAILED, honest fallback reporting. No timings are asserted."""
from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest

from fusionnet.__main__ import main
from fusionnet.bench import peers, report, suite
from fusionnet.bench.suite import check, run_suite

TINY = {"batch_sizes": [2], "repeats": 1, "min_sample_s": 0.001, "warmup": 1,
        "measure_compile": False, "progress": None}
ROW_FIELDS = {"model", "batch", "impl", "status", "correct", "median_us", "iqr_us", "samples",
              "note", "fallback", "compile_cold_s", "compile_cached_s", "warnings"}


def _rows(results):
    return {(r["model"], r["batch"], r["impl"]): r for r in results["records"]}


def test_cli_end_to_end_writes_json_and_png(tmp_path, capsys):
    rc = main(["bench", "--models", "MLP", "--batch-sizes", "2", "--impls", "eager,fused,numpy",
               "--repeats", "2", "--sample-ms", "1", "--no-progress", "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "results.json").read_text())
    for key in ("machine", "versions", "blas", "environment", "config", "models", "records"):
        assert key in data
    assert data["machine"]["cpu_count"] >= 1 and data["machine"]["cpu_model"]
    assert data["versions"]["numpy"] == np.__version__
    rows = _rows(data)
    assert set(rows) == {("MLP", 2, "eager"), ("MLP", 2, "fused"), ("MLP", 2, "numpy")}
    for row in rows.values():
        assert ROW_FIELDS <= set(row)
        assert row["status"] == "ok" and row["correct"] is True
        assert row["median_us"] > 0 and row["samples"] == 2 and row["iqr_us"] >= 0
    fused = rows["MLP", 2, "fused"]
    assert fused["fallback"] is None
    assert fused["compile_cold_s"] > 0 and fused["compile_cached_s"] > 0
    # The cached measurement really loaded numba's machine code from disk.
    comp = data["models"]["MLP"]["compile"]
    assert comp["cold"]["cache_misses"] >= 1 and comp["cached"]["cache_hits"] >= 1
    out = capsys.readouterr().out
    assert "| MLP | 2 |" in out and "eager/fused" in out
    if "matplotlib" in data["versions"] and data["versions"]["matplotlib"]:
        assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_peer_is_skipped_with_a_note(monkeypatch):
    real = peers.import_optional

    def no_jax(name):
        if name.split(".")[0] == "jax":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name)

    monkeypatch.setattr(peers, "import_optional", no_jax)
    results = run_suite(models=["MLP"], impls=["eager", "jax.jit"], **TINY)
    row = _rows(results)["MLP", 2, "jax.jit"]
    assert row["status"] == "skipped" and row["median_us"] is None
    assert "jax not available" in row["note"]
    assert "skip" in report.format_table(results) and "jax not available" in \
        report.format_table(results)


def test_wrong_result_is_failed_and_never_timed(monkeypatch, tmp_path):
    calls = []
    honest = peers.BUILDERS["numpy"]

    def wrong(spec, net):
        impl = honest(spec, net)
        right = impl.call

        def call(X):
            calls.append(1)
            return right(X) + 1e-2
        impl.call = call
        return impl

    monkeypatch.setitem(peers.BUILDERS, "numpy", wrong)
    rc = main(["bench", "--models", "MLP", "--batch-sizes", "2", "--impls", "eager,numpy",
               "--repeats", "1", "--sample-ms", "1", "--no-compile-time", "--no-progress",
               "--out", str(tmp_path)])
    assert rc == 1
    row = _rows(json.loads((tmp_path / "results.json").read_text()))["MLP", 2, "numpy"]
    assert row["status"] == "FAILED" and row["correct"] is False
    assert row["median_us"] is None and row["samples"] == 0 and "max abs error" in row["note"]
    assert len(calls) == 1  # the check's call only: a wrong result is not timed


def test_a_fallback_is_reported_not_hidden(monkeypatch):
    from fusionnet import zoo
    from fusionnet.bench import models

    class FloatChimera(zoo.Chimera):
        """Chimera whose loop test is a Python float: it runs eagerly."""

        def forward(self, X):
            X = self[1](self[0](X))
            inner = self[2]
            X = inner.linear(X)
            X = (X @ inner.rand_weight + 1).relu()
            X = inner.linear(X)
            while float(X.abs().sum()) > 1:
                X /= 2
            return X.sum()

    monkeypatch.setitem(models.MODELS, "Chimera",
                        models.ModelSpec("Chimera", FloatChimera, 20, None))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = run_suite(models=["Chimera"], impls=["eager", "fused", "numpy"], **TINY)
    assert not [w for w in caught if "runs eagerly" in str(w.message)]  # kept off the console
    row = _rows(results)["Chimera", 2, "fused"]
    assert row["status"] == "ok" and "data-dependent" in row["fallback"]
    assert any("Chimera runs" in w for w in row["warnings"])  # ...but in the JSON
    assert results["models"]["Chimera"]["fallback"]
    table = report.format_table(results)
    assert "fused ran eagerly" in table and "data-dependent" in table
    assert _rows(results)["Chimera", 2, "numpy"]["correct"] is True


def test_chimera_compiles_its_loop():
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        results = run_suite(models=["Chimera"], impls=["eager", "fused", "numpy"], **TINY)
    row = _rows(results)["Chimera", 2, "fused"]
    assert row["status"] == "ok" and row["correct"] is True and not row["fallback"]


def test_check_tolerances_and_shapes():
    want = np.array([1.0, 2.0], np.float32)
    assert check(want * (1 + 5e-5), want) == ""
    assert "max abs error" in check(want + 1e-3, want)
    assert "shape" in check(want[None], want)


def test_unknown_names_are_rejected(capsys):
    assert main(["bench", "--models", "NoSuchNet", "--no-progress"]) == 2
    assert "NoSuchNet" in capsys.readouterr().err
    with pytest.raises(ValueError):
        run_suite(models=["MLP"], impls=["nope"], **TINY)


def test_plot_without_matplotlib_is_a_note(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    results = {"config": {}, "records": [], "machine": {}}
    note = report.plot(results, str(tmp_path / "latency.png"))
    assert "matplotlib is not installed" in note
    assert not (tmp_path / "latency.png").exists()


def test_hand_written_peers_match_eager():
    # NumPy for every model; njit for the three code paths (MLP, generic chain, Chimera):
    # DeepMLP/WideMLP reuse the chain, and compiling it for them would only cost time.
    records = run_suite(impls=["numpy"], **TINY)["records"]
    records += run_suite(models=["MLP", "NestMLP", "Chimera"], impls=["njit"], **TINY)["records"]
    bad = [(r["model"], r["impl"], r["note"]) for r in records if not r["correct"]]
    assert not bad
    assert suite.MODELS.keys() == {r["model"] for r in records}
