"""The differential fuzzer (fusionnet/fuzz): its own parts, and a bounded run of it.

The unit tests check the fuzzer itself: the generator writes valid, deterministic,
public-API-only blocks whose shapes it predicts, and reaches every op-table row; the
comparator and the case runner catch planted mismatches (a perturbed result, a NaN in
the wrong place, wrong gradients, ignored weight changes, a wrong exception type) and
report none when "fused" is eager itself; the worker pool records crashes and timeouts
and carries on. The last test is a bounded fuzz run of the real engine, which must
find nothing.
"""
from __future__ import annotations

import ast
import collections
import copy
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

import fusionnet
from fusionnet import dispatch, nn
from fusionnet.fuzz import generate
from fusionnet.fuzz.builder import GENERATORS, NOT_REACHABLE
from fusionnet.fuzz.compare import compare_arrays, same_kind
from fusionnet.fuzz.data import make_arrays
from fusionnet.fuzz.driver import run_fuzz
from fusionnet.fuzz.generate import IMPORTS
from fusionnet.fuzz.run import CaseResult, _rounded_unary, load_case, normalise_reason, run_case
from fusionnet.ops import OPS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = range(1000, 1150)


def _concrete(shape, batch):
    return tuple(batch * (1 if d == "B" else int(d[:-1])) if isinstance(d, str) else d
                 for d in shape)


def _outputs(result):
    return list(result) if isinstance(result, (tuple, list)) else [result]


# ---- the generator ------------------------------------------------------------------------

def test_every_op_row_has_a_generator():
    covered = {op for g in GENERATORS for op in g.ops}
    missing = set(OPS) - covered - set(NOT_REACHABLE)
    assert not missing, f"op rows no fuzz generator reaches: {sorted(missing)}"
    assert set(NOT_REACHABLE) <= set(OPS), "NOT_REACHABLE names rows that no longer exist"
    assert covered <= set(OPS), f"generators name unknown ops: {sorted(covered - set(OPS))}"


def test_generated_blocks_dispatch_every_op_their_generators_name(monkeypatch):
    seen = set()
    real = dispatch.run_eager

    def spy(op, tensors, attrs):
        seen.add(op.name)
        return real(op, tensors, attrs)

    monkeypatch.setattr(dispatch, "run_eager", spy)
    for seed in range(300):
        case = generate(seed)
        block = load_case(f"<case {seed}>", case.source).Block()
        xs = [fusionnet.from_numpy(a) for a in make_arrays(case.inputs, case.batches[0], seed)]
        for x, spec in zip(xs, case.inputs):
            x.requires_grad_(spec["requires_grad"])
        try:
            with np.errstate(all="ignore"):
                outs = [t for t in _outputs(block(*xs)) if t.requires_grad]
                if outs:
                    sum(t.sum() for t in outs).backward()
        except Exception:  # noqa: BLE001 - deliberate errors stop a block; others count
            pass
    claimed = {op for g in GENERATORS for op in g.ops}
    assert claimed - seen == set()


def test_generation_is_deterministic_across_processes():
    seeds = [0, 7, 123456, 2_000_017]
    code = ("import sys; from fusionnet.fuzz import generate; "
            "sys.stdout.write('\\0'.join(generate(s).source for s in %r))" % seeds)
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=ROOT)
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, check=True).stdout.split("\0")
    assert other == [generate(s).source for s in seeds]
    assert generate(1).source != generate(2).source


def test_generated_sources_are_standalone_public_api_code():
    for seed in SEEDS:
        source = generate(seed).source
        tree = ast.parse(source)
        imports = [ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import,
                                                                     ast.ImportFrom))]
        assert "\n".join(imports) + "\n" == IMPORTS
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
        assert [c.name for c in classes] == ["Block"]
        assert {f.name for f in classes[0].body} == {"__init__", "forward"}
        private = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                   and n.attr.startswith("_") and n.attr != "__init__"]
        assert not private, f"case {seed} uses private names {private}"


def test_generated_blocks_run_eagerly_with_the_shapes_the_generator_predicts():
    errors = 0
    for seed in SEEDS:
        case = generate(seed)
        fusionnet.manual_seed(seed)
        block = load_case(f"<case {seed}>", case.source).Block()
        for call, batch in enumerate(case.batches):
            xs = [fusionnet.from_numpy(a) for a in make_arrays(case.inputs, batch, seed, call)]
            try:
                with np.errstate(all="ignore"):
                    result = block(*xs)
            except Exception as err:
                # Only the generator meant to raise may raise.
                assert "error" in case.generators, f"case {seed}: {err!r}\n{case.source}"
                errors += 1
                break
            got = [(tuple(t.shape), str(t.dtype).rpartition(".")[2]) for t in _outputs(result)]
            want = [(_concrete(s, batch), d) for s, d in case.outputs]
            assert got == want, f"case {seed} at batch {batch}\n{case.source}"
            assert type(result).__name__ == {"tensor": "Tensor", "tuple": "tuple",
                                              "list": "list"}[case.structure]
    assert errors < len(SEEDS) // 10


def test_cases_cover_the_features_the_issue_lists():
    text = "\n".join(generate(s).source for s in range(200))
    for feature in ["nn.Sequential(", "nn.ModuleList(", "for i in range(", ".view(-1)",
                    "with torch.no_grad():", ".detach()", ".data", "torch.cat(", "torch.stack(",
                    "[..., ", "None", "self.shared0(", "register_buffer(", "nn.Parameter(",
                    "torch.float64", "'int64'", "'bool'", "'special'", "'huge'", "'limits'",
                    "+=", ".shape[0]", "nn.LazyLinear(", "Linear(1, ", ", 1)"]:
        assert feature in text, feature
    batches = {b for s in range(200) for b in generate(s).batches}
    assert 1 in batches and max(batches) >= 500


# ---- comparing ----------------------------------------------------------------------------

def test_compare_arrays_tolerates_reassociated_float32_sums_only():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1000)).astype(np.float32)
    pairwise = x.sum(1)
    sequential = np.zeros(64, np.float32)
    for j in range(1000):
        sequential += x[:, j]
    assert compare_arrays(pairwise, sequential) == ""
    perturbed = pairwise.copy()
    perturbed[3] *= 1.01
    assert "values differ" in compare_arrays(pairwise, perturbed)
    assert compare_arrays(np.float64(1.0), np.float64(1.0 + 1e-6)) != ""


def test_compare_arrays_special_values_and_integers():
    a = np.array([1.0, np.nan, np.inf, -0.0], np.float32)
    assert compare_arrays(a, np.array([1.0, np.nan, np.inf, 0.0], np.float32)) == ""
    assert "NaN positions" in compare_arrays(a, np.array([np.nan, 1.0, np.inf, 0.0], np.float32))
    assert "infinities" in compare_arrays(a, np.array([1.0, np.nan, -np.inf, 0.0], np.float32))
    assert "infinities" in compare_arrays(a, np.array([1.0, np.nan, 3e38, 0.0], np.float32))
    big = np.array([2**62, 5], np.int64)
    assert compare_arrays(big, big.copy()) == ""
    assert "differ" in compare_arrays(big, np.array([2**62 + 1, 5], np.int64))
    assert "shape" in compare_arrays(np.zeros(3), np.zeros((3, 1)))


def test_same_kind_follows_what_except_clauses_catch():
    from fusionnet.ops import ShapeError
    assert same_kind(ValueError("a"), ValueError("b"))
    assert not same_kind(ValueError("a"), TypeError("b"))
    both = type("Both", (RuntimeError, ValueError), {})
    assert same_kind(ShapeError("a"), both("b"))  # both RuntimeError and ValueError
    assert not same_kind(ShapeError("a"), RuntimeError("b"))


def test_fallback_reasons_lose_paths_lines_and_source_text(tmp_path):
    path = tmp_path / "case_5.py"
    path.write_text("a = 1\n    h3 = h2[:, 0]  # (x)\n")
    msg = (f"fusionnet.fuse: Block runs eagerly: op 'getitem' (at {path}:2: h3 = h2[:, 0]  # "
           f"(x)) has no code-generation emitter yet")
    assert normalise_reason(msg) == "op 'getitem' has no code-generation emitter yet"
    msg = f"fusionnet.fuse: Block runs eagerly: bool() needs a value at {path}:1: a = 1"
    assert normalise_reason(msg) == "bool() needs a value"


# ---- the case runner against planted faults ---------------------------------------------

class _Planted(nn.Module):
    """A stand-in for ``fuse(module)`` that runs eagerly and then does ``fault``."""

    def __init__(self, module, fault):
        super().__init__()
        self.inner, self.fault, self.calls = module, fault, 0

    def forward(self, *args):
        self.calls += 1
        return self.fault(self, self.inner(*args))


def _first_float(result, change):
    outs = _outputs(result)
    for i, t in enumerate(outs):
        if t.is_floating_point() and t.numel() > 0:
            outs[i] = change(t)
            break
    return type(result)(outs) if isinstance(result, (tuple, list)) else outs[0]


def _case_file(tmp_path, seed):
    path = tmp_path / f"case_{seed}.py"
    path.write_text(generate(seed).source)
    return str(path)


def _kinds(result: CaseResult) -> set:
    return {m.kind for m in result.mismatches}


def _float_output(case) -> bool:
    return any(d.startswith("float") and 0 not in s for s, d in case.outputs)


def _plain_seeds(count, pred=lambda case: True):
    """Seeds of cases without deliberate errors, with a non-empty float output (and
    matching ``pred``)."""
    out, seed = [], 500
    while len(out) < count:
        case = generate(seed)
        if "error" not in case.generators and _float_output(case) and pred(case):
            out.append(seed)
        seed += 1
    return out


def test_eager_against_itself_finds_nothing(tmp_path):
    for seed in range(40):
        result = run_case(_case_file(tmp_path, seed), fuse=lambda m: m)
        assert result.mismatches == [] and not result.harness_error, (seed, result)


def test_a_perturbed_result_is_a_forward_mismatch(tmp_path):
    fault = (lambda self, out: _first_float(out, lambda t: t * 1.01 + 1e-3))
    for seed in _plain_seeds(3):
        result = run_case(_case_file(tmp_path, seed), fuse=lambda m: _Planted(m, fault))
        assert "forward" in _kinds(result), seed
        assert any("values differ" in m.detail for m in result.mismatches)


def test_a_nan_in_the_wrong_place_is_a_forward_mismatch(tmp_path):
    def fault(self, out):
        def put_nan(t):
            arr = t.detach().numpy().copy()
            arr.reshape(-1)[0] = np.nan if not np.isnan(arr.reshape(-1)[0]) else 0.0
            return fusionnet.from_numpy(arr)
        return _first_float(out, put_nan)
    seed = _plain_seeds(1)[0]
    result = run_case(_case_file(tmp_path, seed), fuse=lambda m: _Planted(m, fault))
    assert any(m.kind == "forward" and "NaN positions" in m.detail for m in result.mismatches)


def test_wrong_gradients_are_grad_mismatches(tmp_path):
    def fault(self, out):  # the same values, twice the gradient
        return _first_float(out, lambda t: t * 2 - t.detach())
    seeds = _plain_seeds(3, lambda c: any(s["requires_grad"] for s in c.inputs))
    found = [run_case(_case_file(tmp_path, s), fuse=lambda m: _Planted(m, fault)) for s in seeds]
    assert any("grad" in _kinds(r) for r in found)


class _Frozen(nn.Module):
    """A stand-in for ``fuse(module)`` that keeps the weights the module had when fused."""

    def __init__(self, module):
        super().__init__()
        self.frozen = copy.deepcopy(module)

    def forward(self, *args):
        return self.frozen(*args)


def test_ignoring_weight_changes_is_a_mutation_mismatch(tmp_path):
    seeds = _plain_seeds(4, lambda c: c.mutations[0] in ("data_mul", "load_state_dict",
                                                         "replace_param", "data_assign")
                         and "nn.Linear(" in c.source and "dropout" not in c.generators)
    found = [run_case(_case_file(tmp_path, s), fuse=_Frozen) for s in seeds]
    assert any("mutation" in _kinds(r) for r in found)
    assert not any("forward" in _kinds(r) for r in found)


def test_a_different_exception_type_is_an_exception_mismatch(tmp_path):
    def fault(self, out):
        raise KeyError("planted")
    seed = _plain_seeds(1)[0]
    result = run_case(_case_file(tmp_path, seed), fuse=lambda m: _Planted(m, fault))
    assert any(m.kind == "exception" and "KeyError" in m.detail for m in result.mismatches)

    erroring = next(s for s in range(2000) if "error" in generate(s).generators and
                    run_case(_case_file(tmp_path, s), fuse=lambda m: m).eager_errors)

    class Wrong(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *args):
            try:
                return self.m(*args)
            except Exception as err:
                raise KeyError("not what eager raised") from err
    result = run_case(_case_file(tmp_path, erroring), fuse=Wrong)
    assert any(m.kind == "exception" and "KeyError" in m.detail for m in result.mismatches)


def test_shrinking_keeps_the_mismatch_and_drops_the_rest():
    from fusionnet.fuzz.shrink import shrink_source
    fault = (lambda self, out: _first_float(out, lambda t: t * 1.01 + 1e-3))
    seed = _plain_seeds(1, lambda c: c.source.count("\n        h") >= 5)[0]
    source = generate(seed).source
    small = shrink_source(source, "forward", fuse=lambda m: _Planted(m, fault))
    body = small.split("def forward(")[1].split("\n\n\n")[0]
    assert body.count("\n        ") <= 3 < source.split("def forward(")[1].count("\n        ")
    assert "MUTATIONS = []" in small
    module = load_case("<shrunk>", small)
    assert hasattr(module, "Block") and module.SEED == seed


_HAND_CASE = IMPORTS + """

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.w = nn.Parameter(torch.randn(4) * 0.5)

    def forward(self, x0):
        h = torch.tanh(self.lin(x0)) * self.w
        return h.sum(-1, keepdim=True) + F.relu(h)


SEED = 5
BATCHES = (6, 2)
INPUTS = [{'shape': ['B', 3], 'dtype': 'float32', 'requires_grad': True, 'regime': 'normal'}]
MUTATIONS = ['data_mul']
RANDOM_OPS = False
LOWEST_FLOAT = 'float32'
"""


def test_the_torch_peer_compares_values_and_gradients(tmp_path):
    pytest.importorskip("torch")
    from fusionnet.fuzz.peer import compare_with_torch
    path = str(tmp_path / "case_5.py")
    module = load_case(path, _HAND_CASE)
    assert compare_with_torch(module, path, _HAND_CASE) == []
    off = _HAND_CASE.replace("return h.sum(-1, keepdim=True) + F.relu(h)",
                             "return h.sum(-1, keepdim=True) + F.relu(h) * 1.01")
    found = compare_with_torch(module, path, off)
    assert {m.kind for m in found} == {"torch"}
    assert any(m.phase == "call1" for m in found) and any(m.phase == "grad1" for m in found)


# ---- the worker pool --------------------------------------------------------------------------

def planted_run_case(path, torch_peer=False):
    """A worker's run_case that aborts, hangs or exits for some seeds (see below)."""
    seed = int(re.search(r"case_(\d+)", path).group(1))
    if seed % 4 == 1:
        os.abort()
    if seed % 4 == 2:
        time.sleep(600)
    if seed % 4 == 3:
        os._exit(3)
    return CaseResult(seed=seed)


def pid_run_case(path, torch_peer=False):
    """A worker's run_case that reports which process ran the case."""
    result = CaseResult(seed=int(re.search(r"case_(\d+)", path).group(1)))
    result.notes.append(f"pid {os.getpid()}")
    return result


def test_workers_are_retired_after_recycle_cases(tmp_path):
    """Compiled code is never freed, so a worker's memory only grows: each is replaced
    after ``recycle`` cases, and every case still runs once."""
    run_fuzz(seed=0, cases=7, workers=2, out=str(tmp_path), recycle=2,
             run_case_name="test_fuzz.pid_run_case")
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(r["seed"] for r in lines) == list(range(7))
    pids = collections.Counter(r["notes"][0] for r in lines)
    assert len(pids) >= 4 and max(pids.values()) <= 2, pids


def test_the_pool_records_crashes_and_timeouts_and_carries_on(tmp_path):
    summary = run_fuzz(seed=0, cases=8, workers=2, timeout=5, out=str(tmp_path),
                       run_case_name="test_fuzz.planted_run_case")
    assert summary["cases"] == 8
    assert summary["crashes"] == 4 and summary["timeouts"] == 2
    assert sorted(summary["failing_seeds"]) == [1, 2, 3, 5, 6, 7]
    assert "crash: the worker died (SIGABRT)" in (tmp_path / "case_1.py").read_text()
    assert (tmp_path / "case_2.py").read_text().startswith("# Observed in the fuzz run:\n#   "
                                                            "timeout")
    assert not (tmp_path / "case_4.py").exists()
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["seed"] for line in lines) == list(range(8))


def test_a_saved_case_is_its_own_repro_script(tmp_path):
    seed = _plain_seeds(1, lambda c: c.fusable_only)[0]
    path = _case_file(tmp_path, seed)
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, path], capture_output=True, text=True, env=env)
    assert proc.stdout.startswith(f"case {seed}: "), proc.stdout + proc.stderr
    assert proc.returncode == (0 if " 0 mismatch(es)" in proc.stdout.splitlines()[0] else 1)


# ---- the bounded run ------------------------------------------------------------------------

def test_bounded_fuzz_run_finds_no_mismatches_and_no_crashes(tmp_path):
    """24 cases of run seed 0 on 2 workers: every eager/fused difference the fuzzer can
    see fails this test (reproduce one with ``python <repro>`` from the folder it names).
    Kept small because it is the parallel suite's longest test; docs/fuzzing.md has the
    long runs."""
    out = tmp_path / "fuzz"
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "fusionnet.fuzz", "--seed", "0", "--cases",
                           "24", "--workers", "2", "--timeout", "300", "--out", str(out),
                           "--cache-dir", os.environ["FUSIONNET_CACHE_DIR"]],
                          capture_output=True, text=True, env=env)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr
    summary = json.loads(lines[0])
    assert summary["cases"] == 24
    found = {k: summary[k] for k in ("forward_mismatches", "grad_mismatches",
                                     "mutation_mismatches", "exception_mismatches", "crashes",
                                     "timeouts", "harness_errors")}
    assert not any(found.values()), (f"{found}; failing seeds {summary['failing_seeds']}; "
                                      f"repros in {out}\n{proc.stderr}")


def test_rounding_flips_of_discrete_results_are_notes_only_where_the_case_makes_them():
    from fusionnet.fuzz.compare import ROUNDING, case_flips, compare_arrays

    e = np.zeros(485, np.int32)
    f = e.copy()
    f[7] = 1                                  # one tanh near 1 truncated the other way
    assert compare_arrays(e, f, flips=True).startswith(ROUNDING)
    assert not compare_arrays(e, f).startswith(ROUNDING)   # a case with no conversion
    f[:20] = 1                                # too many to be last-bit flips
    assert compare_arrays(e, f, flips=True) and not compare_arrays(
        e, f, flips=True).startswith(ROUNDING)
    assert case_flips("h5 = h2.clamp(-1000.0, 1000.0).int()")
    assert case_flips("h4 = h0 > 0.5")
    assert not case_flips("h1 = torch.tanh(h0) * 2")


_CANCELLING = '''
import fusionnet as torch
from fusionnet import nn


class Block(nn.Module):
    def forward(self, x0, x1):
        h1 = x1 @ x1.t()
        return h1.sum(dim=(-2, -1))


SEED = 1204001122
BATCHES = (64, 998)
INPUTS = [{'shape': ['B', 1, 8], 'dtype': 'float32', 'requires_grad': True, 'regime': 'special'},
          {'shape': ['B', 1], 'dtype': 'float32', 'requires_grad': True, 'regime': 'normal'}]
MUTATIONS = []
RANDOM_OPS = False
LOWEST_FLOAT = 'float32'
'''


def test_an_ill_conditioned_sum_is_a_note_and_a_real_error_is_not(tmp_path):
    # Found by the seed-1204 run (case 1204001122): the sum of x @ x.T over a batch of
    # 998 cancels to ~2e-5 from terms of ~1; eager, fused and PyTorch each keep
    # different digits. Eager itself moves that much when its inputs move by 1e-6.
    path = tmp_path / "case_cancel.py"
    path.write_text(_CANCELLING)
    # "fused" halves the result: for this cancelling sum, within eager's own noise.
    reorder = (lambda self, out: _first_float(out, lambda t: (t * 0.5).detach()))
    result = run_case(str(path), fuse=lambda m: _Planted(m, reorder))
    assert not [m for m in result.mismatches if m.phase == "call1"], result.mismatches
    assert any(n.startswith("call1: ill-conditioned") for n in result.notes)
    fault = (lambda self, out: _first_float(out, lambda t: t * 1.01 + 1e-3))
    for seed in _plain_seeds(2):   # a well-conditioned result keeps its mismatch
        result = run_case(_case_file(tmp_path, seed), fuse=lambda m: _Planted(m, fault))
        assert "forward" in _kinds(result), seed


_OVERFLOWING = '''
import fusionnet as torch
from fusionnet import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.w0 = nn.Parameter(torch.randn(5, 1) * 0.5)

    def forward(self, x1):
        return x1.T @ x1 >= self.w0


SEED = 1207001939
BATCHES = (64, 1000)
INPUTS = [{'shape': ['B', 5], 'dtype': 'float32', 'requires_grad': False, 'regime': 'REGIME'}]
MUTATIONS = []
RANDOM_OPS = False
LOWEST_FLOAT = 'float32'
'''


class _WideProduct(nn.Module):
    """A stand-in for ``fuse`` computing ``x1.T @ x1`` the way a BLAS with fused
    multiply-adds can: exact products, so sums past float32's range come out as +-inf
    where NumPy's float32 product meets ``inf - inf`` and gives NaN."""

    def __init__(self, module, invert=False):
        super().__init__()
        self.inner, self.invert = module, invert

    def forward(self, x1):
        a = x1.detach().numpy().astype(np.float64)
        with np.errstate(all="ignore"):
            h1 = (a.T @ a).astype(np.float32)
        out = h1 >= self.inner.w0.detach().numpy()
        return fusionnet.from_numpy(~out if self.invert else out)


def test_an_overflowing_product_is_a_note_and_a_wrong_comparison_is_not(tmp_path):
    # Found by the seed-1207 run (case 1207001939): on 'huge' inputs the products of
    # x1.T @ x1 overflow float32; NumPy gives NaN off the diagonal, numba's BLAS +-inf,
    # and `>= w` turns that into different bools. Both are valid float32 results.
    path = tmp_path / "case_overflow.py"
    path.write_text(_OVERFLOWING.replace("REGIME", "huge"))
    result = run_case(str(path), fuse=_WideProduct)
    assert not result.mismatches, result.mismatches
    assert any("ill-conditioned" in n for n in result.notes), result.notes
    # The same stand-in on inputs whose products stay in range is exact: no note needed.
    path.write_text(_OVERFLOWING.replace("REGIME", "normal"))
    result = run_case(str(path), fuse=_WideProduct)
    assert not result.mismatches and not result.notes, (result.mismatches, result.notes)
    # A wrong comparison stays a mismatch, with or without overflow.
    for regime in ("normal", "huge"):
        path.write_text(_OVERFLOWING.replace("REGIME", regime))
        result = run_case(str(path), fuse=lambda m: _WideProduct(m, invert=True))
        assert "forward" in _kinds(result), (regime, result.notes)


_TIE = '''
import fusionnet as torch
from fusionnet import nn


class Block(nn.Module):
    def forward(self, x0):
        return torch.maximum(x0.detach().to(torch.float64), torch.tanh(x0))


SEED = 1208000914
BATCHES = (1, 781)
INPUTS = [{'shape': ['B', 5, 5, 5], 'dtype': 'float32', 'requires_grad': True, 'regime': 'special'}]
MUTATIONS = []
RANDOM_OPS = False
LOWEST_FLOAT = 'float32'
'''


class _RoundedUnary(nn.Module):
    """A stand-in for ``fuse`` computing float32 transcendentals as the generated code
    does (in float64, rounded once); ``wrong`` also halves every input gradient."""

    def __init__(self, module, wrong=False):
        super().__init__()
        self.inner, self.wrong = module, wrong

    def forward(self, x0):
        with _rounded_unary():
            out = self.inner(x0)
        return out - (x0 - x0.detach()) * 0.5 if self.wrong else out


def test_a_gradient_tie_decided_by_rounding_is_a_note_and_a_wrong_gradient_is_not(tmp_path):
    # Found by the seed-1208 run (case 1208000914): maximum(x, tanh(x)) at x = -3.1e-4,
    # where NumPy's float32 tanh is 1 ulp from x and the correctly rounded one equals x:
    # a tie, so the gradient splits in two. Both forwards are valid float32 results.
    path = tmp_path / "case_tie.py"
    path.write_text(_TIE)
    x = np.float32(-0.00031389124)
    if np.tanh(x) == np.float32(np.tanh(np.float64(x))):
        pytest.skip("this NumPy's float32 tanh is correctly rounded there: no tie to see")
    result = run_case(str(path), fuse=_RoundedUnary)
    assert not result.mismatches, result.mismatches
    assert any("ill-conditioned gradient" in n for n in result.notes), result.notes
    result = run_case(str(path), fuse=lambda m: _RoundedUnary(m, wrong=True))
    assert "grad" in _kinds(result), result.notes


_SATURATED_SOFTMAX = IMPORTS + '''

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.shared0 = nn.Linear(4, 4)

    def forward(self, x0):
        h0 = F.log_softmax(x0, dim=-1)
        h2 = self.shared0(torch.tanh(self.shared0(h0)))
        return torch.exp(F.log_softmax(h2, -2))


SEED = 1212001066
BATCHES = (564, 64)
INPUTS = [{'shape': ['B', 4], 'dtype': 'float32', 'requires_grad': True, 'regime': 'mixed'}]
MUTATIONS = ['data_mul']
RANDOM_OPS = False
LOWEST_FLOAT = 'float32'
'''

_GELU_OF_SIGNS = IMPORTS + '''

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.act0 = nn.GELU(approximate="tanh")

    def forward(self, x0):
        h3 = F.log_softmax(x0.sign(), dim=0)
        return self.act0(torch.reshape(h3, (1, -1,)))


SEED = 1212001152
BATCHES = (1, 64)
INPUTS = [{'shape': ['B', 2], 'dtype': 'float32', 'requires_grad': True, 'regime': 'normal'}]
MUTATIONS = []
RANDOM_OPS = False
LOWEST_FLOAT = 'float32'
'''


def test_noise_fused_has_no_more_of_than_eager_is_a_note_and_an_error_is_not(tmp_path):
    """Seed-1212 run: (a) case 1212001066, a softmax over the batch of saturated rows
    has an exact zero weight gradient; eager and fused keep ~1e-8 of rounding noise
    each, at different digits. (b) case 1212001152, GELU's ``1 + tanh(x)`` cancels near
    -1 after a ``sign()`` (input nudges cannot move it); fused's correctly rounded tanh
    is 1 ulp from eager's SIMD one. Both are notes (the block in float64 shows fused no
    further from the truth than eager); an added error in the same blocks is not."""
    results = {}
    for name, source in (("softmax", _SATURATED_SOFTMAX), ("gelu", _GELU_OF_SIGNS)):
        path = tmp_path / f"case_{name}.py"
        path.write_text(source)
        results[name] = run_case(str(path))
        assert results[name].mismatches == [], results[name].mismatches
        assert not results[name].harness_error
    assert any("ill-conditioned gradient (fused is no further" in n
               for n in results["softmax"].notes), results["softmax"].notes
    assert any("ill-conditioned" in n for n in results["gelu"].notes), results["gelu"].notes
    fault = (lambda self, out: _first_float(out, lambda t: t * 1.01 + 1e-6))
    result = run_case(str(tmp_path / "case_gelu.py"),
                      fuse=lambda m: _Planted(fusionnet.fuse(m), fault))
    assert "forward" in _kinds(result), result


_KNIFE_EDGE = '''
import fusionnet as torch
from fusionnet import nn
from fusionnet.nn import functional as F


class Block(nn.Module):
    def forward(self, x0):
        h = F.softmax((x0 < torch.arange(8, dtype=torch.float64)).exp(), dim=-2)
        n0 = 0
        while h.abs().sum() > 1.0 and n0 < 20:
            h = h / 2
            n0 += 1
        return h


SEED = 1215000341
BATCHES = (479, 128)
INPUTS = [{'shape': ['B', 8], 'dtype': 'float64', 'requires_grad': False, 'regime': 'normal'}]
MUTATIONS = []
RANDOM_OPS = False
LOWEST_FLOAT = 'float32'
'''


def test_a_trip_count_decided_by_summation_order_is_a_note_and_a_wrong_count_is_not(tmp_path):
    # Found by the seed-1215 run (case 1215000341): the columns of a softmax over the
    # batch sum to 1, so the loop's test `sum() > 1` after three halvings is decided by
    # rounding: NumPy sums pairwise, the generated code in index order (both valid).
    from fusionnet.fuzz.run import _sums_in_order

    a = np.random.default_rng(0).random((479, 8))
    with _sums_in_order():
        got = fusionnet.from_numpy(a).sum()._data
    in_order = 0.0
    for v in a.ravel():
        in_order += v
    assert got == in_order   # exactly the sequential float64 sum
    path = tmp_path / "case_knife.py"
    path.write_text(_KNIFE_EDGE)
    # "fused" runs the block with index-order sums: a valid order, so only notes.
    def in_order_fuse(m):
        class InOrder(nn.Module):
            def forward(self, x):
                with _sums_in_order():
                    return m(x)
        return InOrder()
    result = run_case(str(path), fuse=in_order_fuse)
    assert not result.mismatches, result.mismatches
    # One halving too many everywhere is no rounding: it stays a mismatch.
    def wrong(m):
        class Wrong(nn.Module):
            def forward(self, x):
                return m(x) / 2
        return Wrong()
    result = run_case(str(path), fuse=wrong)
    assert "forward" in _kinds(result)
