"""The CUDA backend's spellings compile: every elementwise spelling, and every reduction's
combine step (the elementwise op its row names), is rendered into a small kernel per
dtype and built with ``nvcc -c`` (no GPU needed).

The whole generated modules are compiled by ``tests/test_cuda_codegen.py`` and run on the
CPU by ``tests/test_cuda_emulation.py``; this checks the spelling table
(``fusionnet/codegen/cuda/spellings.py``) alone, per dtype. Skipped when ``nvcc`` is not
installed.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from fusionnet.codegen import get_backend
from fusionnet.codegen.cuda.spellings import render_op
from fusionnet.ops import OPS, Kind

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="needs nvcc (the CUDA toolkit)")

CTYPES = {"float32": "float", "float64": "double"}


def _elementwise_kernel(name, op, ctype):
    arity = op.arity
    attrs = {"dtype": np.dtype(np.float32)} if name == "cast" else {}
    out_type = "bool" if op.dtype(*[np.dtype(np.float32)] * arity, **attrs).kind == "b" \
        else ctype
    in_types = ["bool" if name == "where" and i == 0 else
                ("bool" if name.startswith("logical") else ctype) for i in range(arity)]
    params = ", ".join(f"const {t}* a{i}" for i, t in enumerate(in_types))
    loads = " ".join(f"{t} v{i} = a{i}[i];" for i, t in enumerate(in_types))
    target = {"float": "float32", "double": "float64"}[ctype]
    attrs = {"min": "-1.5", "max": "2.5"} | ({"dtype": np.dtype(target)} if name == "cast" else {})
    expr = render_op(name, [f"v{i}" for i in range(arity)], attrs, target)
    return (f'extern "C" __global__ void k_{name}_{ctype}({params}, {out_type}* out, int n) '
            f"{{ int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) {{ {loads} "
            f"out[i] = {expr}; }} }}")


def _c_literal(value):
    """The row's start value (a Python number) in C."""
    if value in (float("inf"), float("-inf")):
        return "INFINITY" if value > 0 else "-INFINITY"
    return repr(value)


def _reduction_kernel(name, op, ctype):
    combine = render_op(op.reduction.combine, ["acc", "a[i]"], {}, "float64")
    start = _c_literal(op.reduction.start_value(np.dtype(np.float64)))
    return (f'extern "C" __global__ void r_{name}_{ctype}(const {ctype}* a, {ctype}* out, '
            f"int n) {{ {ctype} acc = {start}; for (int i = 0; i < n; ++i) "
            f"acc = {combine}; out[0] = acc; }}")


def test_cuda_templates_compile(tmp_path):
    kernels = []
    cuda = get_backend("cuda")
    for name, op in sorted(OPS.items()):
        if not cuda.supports(op):
            continue
        for ctype in CTYPES.values():
            if op.kind is Kind.ELEMENTWISE:
                kernels.append(_elementwise_kernel(name, op, ctype))
            elif op.kind is Kind.REDUCTION:
                kernels.append(_reduction_kernel(name, op, ctype))
    assert len(kernels) > 60
    source = tmp_path / "templates.cu"
    source.write_text("#include <math.h>\n" + "\n".join(kernels) + "\n")
    proc = subprocess.run([NVCC, "-c", "-arch=sm_80", str(source), "-o",
                           str(tmp_path / "templates.o")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
