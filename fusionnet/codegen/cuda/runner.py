"""The host side of a compiled CUDA Program: buffers, launches, CUDA graphs.

:class:`CudaCompiled` compiles the module's CUDA C once with ``cupy.RawModule`` (NVRTC) on
its first call, and keeps one :class:`~.plan.Plan` per *placement*: the concrete sizes (the
batch size of a batch-generic program), the device, and the address and strides of every
parameter. A plan preallocates every buffer (inputs are copied into its own static input
buffers), builds every layout view once and binds every kernel's arguments, so a call is
a fixed list of launches. Graph capture bakes those addresses in, which is why a moved
parameter (``p.data = ...``) makes a new plan rather than a wrong result.

From a plan's second call its launches are captured in a CUDA graph
(``cupy.cuda.Stream(non_blocking=True).begin_capture()`` / ``end_capture()``) and the call
is: copy the inputs in, ``Graph.launch()``, copy the outputs out (a caller may keep an
output, and the next launch overwrites the plan's buffers). CuPy refuses cuBLAS calls
during stream capture (cupy/cupy#4567 disabled them; cupy/cupy#6290 tracks lifting that),
so a plan that will be captured computes its GEMMs with the module's tiled kernels (the
epilogue fused); a plan with a GEMM over :data:`TILED_MAX_MACS` multiply-adds uses cuBLAS
(``cupy.matmul``) plus the epilogue kernel, launched without a graph (launch costs are
then noise). A ``while`` region runs as its device-side loop kernel where ``loops.py``
allows (inside the graph), else as a host loop that reads the test back once per
iteration; a ``cond`` region reads its test back. Both host forms run without a graph.

Environment overrides (for measuring): ``FUSIONNET_CUDA_GRAPHS=0`` (no capture),
``FUSIONNET_CUDA_GEMM=tiled|cublas``, ``FUSIONNET_CUDA_LOOPS=host|device``.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from ..backend import CompiledProgram
from ..lower import Program
from .plan import MAX_PLANS, Plan, pointer

__all__ = ["CudaCompiled"]

class CudaCompiled(CompiledProgram):
    """A Program compiled for CUDA: ``call(arrays, tail)`` runs it on device arrays.

    ``xp`` is CuPy (looked up on the first call); the CPU emulation in the tests passes a
    stand-in with the same few functions."""

    stats_label = "CUDA plans"

    def __init__(self, program: Program, source: str, kernels: dict, xp=None):
        super().__init__(fn=self.forward, program=program, source=source,
                         kernel_sources={k: v.source for k, v in kernels.items()},
                         path=f"<CUDA module for {program.name!r}, compiled by NVRTC>")
        self.kernels = kernels
        self.xp = xp
        self.module = None
        self.functions: dict = {}
        self.plans: OrderedDict = OrderedDict()
        self.notes: list[str] = []     # what the runner decided (capture, fallbacks)
        self.lock = threading.RLock()
        self._device_constants: dict = {}
        self._n_inputs = len(program.inputs)

    def call(self, arrays, tail):
        """Run the program on input arrays and the tail (parameters, then constants)."""
        return self.forward(*arrays, *tail)

    def compile_stats(self) -> dict:
        """How many placements have a plan, and how many of those run as one graph."""
        return {"plans": len(self.plans),
                "graphs": sum(1 for p in self.plans.values() if p.graph is not None)}

    def describe(self) -> str:
        """What the runner decided, one line per plan (capture, GEMMs, fallbacks)."""
        return "\n".join(self.notes)

    # ---- the call ---------------------------------------------------------------------

    def forward(self, *args):
        """The compiled forward: inputs then tail, as the numba driver takes them."""
        xp = self._xp()
        inputs, tail = args[:self._n_inputs], list(args[self._n_inputs:])
        dev = getattr(getattr(inputs[0], "device", None), "id", None) if inputs else None
        if dev is not None and xp.cuda.runtime.getDevice() != dev:
            # CuPy allocates and launches on its current device, not the inputs' device.
            with xp.cuda.Device(dev):
                return self._forward(xp, dev, inputs, tail)
        return self._forward(xp, dev, inputs, tail)

    def _forward(self, xp, dev, inputs, tail):
        with self.lock:
            if self.module is None:
                self._load(xp)
            tail = [self._on_device(xp, a) for a in tail]
            env = {sym: inputs[self.program.inputs.index(name)].shape[dim]
                   for sym, (name, dim) in self.program.symbols.items()}
            key = (tuple(sorted(env.items())), dev,
                   tuple((pointer(a), a.strides) for a in tail))
            plan = self.plans.get(key)
            if plan is None:
                plan = self.plans[key] = Plan(self, xp, env, inputs, tail)
                if len(self.plans) > MAX_PLANS:
                    self.plans.popitem(last=False)
            else:
                self.plans.move_to_end(key)
            return plan.run(inputs)

    def _xp(self):
        if self.xp is None:
            from ...device import require_cupy  # noqa: PLC0415 - CuPy only when used
            self.xp = require_cupy()
        return self.xp

    def _load(self, xp) -> None:
        """Compile the module with NVRTC (once) and look up every kernel."""
        self.module = xp.RawModule(code=self.source, options=("--std=c++17",))
        self.functions = {name: self.module.get_function(name) for name in self.kernels}

    def _on_device(self, xp, a):
        """Program constants arrive as NumPy arrays: uploaded once, then reused."""
        if type(a) is not np.ndarray:
            return a
        cached = self._device_constants.get(id(a))
        if cached is None or cached[0] is not a:
            cached = self._device_constants[id(a)] = (a, xp.asarray(a))
        return cached[1]
