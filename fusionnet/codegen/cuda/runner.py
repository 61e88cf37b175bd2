"""The host side of a compiled CUDA Program: buffers, launches, CUDA graphs.

:class:`CudaCompiled` compiles the module's CUDA C once with ``cupy.RawModule`` (NVRTC) on
its first call, and keeps one :class:`_Plan` per *placement*: the concrete sizes (the
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

import os
import threading
from collections import OrderedDict

import numpy as np

from ...ops import get_op
from ..backend import CompiledProgram
from ..lower import Branch, Kernel, Loop, Program, View, walk_steps
from ...runtime.symbolic import evaluate
from .kernels import BLOCK, RBLOCK, TILE, reduction_axes
from .loops import LOOP_BLOCK, why_not_device_loop
from .module import loop_kernel_name

__all__ = ["CudaCompiled", "TILED_MAX_MACS", "MAX_PLANS", "options"]

#: Largest GEMM (M*N*K multiply-adds) a captured plan computes with the tiled kernel;
#: larger ones go to cuBLAS, uncaptured. Not measured yet: a first guess to check on a GPU.
TILED_MAX_MACS = 1 << 27
#: Plans kept per compiled program (least recently used dropped first).
MAX_PLANS = 8
_MAX_GRID = 65535


def options() -> dict:
    """The runner's choices, read from the environment (see the module docstring)."""
    return {"graphs": os.environ.get("FUSIONNET_CUDA_GRAPHS", "1") != "0",
            "gemm": os.environ.get("FUSIONNET_CUDA_GEMM", "auto"),
            "loops": os.environ.get("FUSIONNET_CUDA_LOOPS", "device")}


def _pointer(a) -> int:
    data = getattr(a, "data", None)
    ptr = getattr(data, "ptr", None)
    return ptr if ptr is not None else a.__array_interface__["data"][0]


def _copy(xp, dst, src, stream) -> None:
    """``dst[...] = src`` on ``stream``: one device-to-device memcpy where both are
    contiguous arrays of one dtype (cheaper to issue than CuPy's copy kernel)."""
    data = getattr(dst, "data", None)
    if hasattr(data, "copy_from_device_async") and src.dtype == dst.dtype and \
            src.flags.c_contiguous and src.shape == dst.shape:
        data.copy_from_device_async(src.data, src.nbytes, stream)
    else:
        xp.copyto(dst, src)


def _strides(a) -> list:
    return [s // a.itemsize for s in a.strides]


class CudaCompiled(CompiledProgram):
    """A Program compiled for CUDA: ``call(arrays, tail)`` runs it on device arrays.

    ``xp`` is CuPy (looked up on the first call); the CPU emulation in the tests passes a
    stand-in with the same few functions."""

    def __init__(self, program: Program, source: str, kernels: dict, xp=None):
        super().__init__(fn=self.forward, program=program, source=source,
                         kernel_sources={k: v.source for k, v in kernels.items()})
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
                   tuple((_pointer(a), a.strides) for a in tail))
            plan = self.plans.get(key)
            if plan is None:
                plan = self.plans[key] = _Plan(self, xp, env, inputs, tail)
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


class _Plan:
    """One placement's buffers, views and bound launches (see the module docstring)."""

    def __init__(self, compiled: CudaCompiled, xp, env: dict, inputs, tail):
        self.c, self.xp, self.env = compiled, xp, env
        prog = compiled.program
        opts = options()
        self.batch = env.get("B", 1)
        self.arrays: dict = {}
        self.static = [xp.empty(a.shape, a.dtype) for a in inputs]
        self.arrays.update(zip(prog.inputs, self.static))
        names = [p.name for p in prog.params] + [n for n, _ in prog.constants]
        self.arrays.update(zip(names, tail))
        host_flow = self._needs_host(prog.steps, opts)
        big = any(self._macs(k) > TILED_MAX_MACS for k in walk_steps(prog.steps)
                  if isinstance(k, Kernel) and k.kind == "gemm")
        self.gemm = opts["gemm"] if opts["gemm"] in ("tiled", "cublas") else (
            "cublas" if big or host_flow or not opts["graphs"] else "tiled")
        # Capture only what a graph can hold: no host read-backs, no cuBLAS.
        self.capture = opts["graphs"] and not host_flow and self.gemm == "tiled"
        self.loops = opts["loops"]
        self.actions = self._block(prog.steps, top=True)
        self.outputs = [self.arrays[o] for o in prog.outputs]
        self.graph = None
        self.calls = 0
        self.event = None
        why = ("host control flow" if host_flow else "a GEMM above TILED_MAX_MACS" if big
               else "FUSIONNET_CUDA_GRAPHS=0" if not opts["graphs"] else
               "FUSIONNET_CUDA_GEMM=cublas" if self.gemm == "cublas" else "")
        compiled.notes.append(f"plan {env or '(fixed sizes)'}: GEMMs by {self.gemm}, "
                              + ("captured from the second call" if self.capture
                                 else f"launched one by one ({why})"))

    # ---- building -----------------------------------------------------------------------

    def _needs_host(self, steps, opts) -> bool:
        for step in walk_steps(steps):
            if isinstance(step, Branch):
                return True
            if isinstance(step, Loop) and (opts["loops"] == "host" or why_not_device_loop(step)):
                return True
        return False

    def _size(self, dim) -> int:
        return evaluate(dim, self.batch)

    def _macs(self, k: Kernel) -> int:
        m, n = (self._size(d) for d in k.shape)
        a_shape = self.c.program.shapes[k.gemm["a"]]
        kdim = self._size(a_shape[0] if k.gemm.get("a_transposed") else a_shape[1])
        return m * n * kdim

    def _buffer(self, name: str):
        prog = self.c.program
        shape = tuple(self._size(d) for d in prog.shapes[name])
        return self.xp.empty(shape, np.dtype(prog.dtypes[name]))

    def _block(self, steps, top: bool = False) -> list:
        """The actions of ``steps``; buffers are allocated and views built now."""
        actions = []
        reusable: dict = {}  # plan_buffers' slot -> its array, once free (top level only)
        for step in steps:
            if isinstance(step, View):
                actions += self._view(step)
            elif isinstance(step, Loop):
                actions.append(self._loop(step))
            elif isinstance(step, Branch):
                actions.append(self._branch(step))
            else:
                slot = reusable.get(step.buffer) if top and step.buffer is not None else None
                if slot is not None and slot[0] not in step.operands and \
                        slot[1].shape == tuple(self._size(d) for d in step.shape) and \
                        slot[1].dtype == np.dtype(step.dtype):
                    self.arrays[step.out] = slot[1]
                else:
                    self.arrays[step.out] = self._buffer(step.out)
                if top and step.buffer is not None:
                    reusable[step.buffer] = (step.out, self.arrays[step.out])
                actions += self._kernel(step)
        return actions

    def _view(self, v: View) -> list:
        xp, src = self.xp, self.arrays[v.src]
        arg = tuple(self._size(d) for d in v.arg) if v.step != "permute" else tuple(v.arg)
        if v.step == "permute":
            self.arrays[v.out] = src.transpose(arg)
        elif v.step == "expand":
            self.arrays[v.out] = xp.broadcast_to(src, arg)
        elif src.flags.c_contiguous:
            self.arrays[v.out] = src.reshape(arg)
        else:  # a reshape of a strided view copies, every call, into a buffer of its own
            buf = xp.empty(src.shape, src.dtype)
            self.arrays[v.out] = buf.reshape(arg)
            return [lambda: xp.copyto(buf, src)]
        return []

    def _args(self, kernel) -> tuple:
        args = []
        for p in kernel.params:
            if p[0] == "array":
                a = self.arrays[p[1]]
                strides = _strides(a)
                args.append(a)
                args += [np.int64(s) for s in (strides[::-1] if p[3] else strides)]
            else:
                args.append(np.int64(self._size(p[1])))
        return tuple(args)

    def _launch(self, name: str, grid, block) -> list:
        fn, args = self.c.functions[name], self._args(self.c.kernels[name])
        if any(g == 0 for g in grid):
            return []
        return [lambda: fn(grid, block, args)]

    def _kernel(self, k: Kernel) -> list:
        actions = self._check_empty(k)
        if k.kind == "elementwise":
            n = int(np.prod([self._size(d) for d in k.shape]))
            return actions + self._launch(k.name, (min(-(-n // BLOCK), _MAX_GRID),), (BLOCK,))
        if k.kind == "reduction":
            src = [self._size(d) for d in k.reduce["source_shape"]]
            axes = reduction_axes(k)
            nout = int(np.prod([s for i, s in enumerate(src) if i not in axes]))
            return actions + self._launch(k.name, (min(nout, _MAX_GRID),), (RBLOCK,))
        if self.gemm == "tiled":
            m, n = (self._size(d) for d in k.shape)
            return self._launch(k.name, (-(-n // TILE), -(-m // TILE)), (TILE, TILE))
        return self._cublas(k)

    def _check_empty(self, k: Kernel) -> list:
        """A reduction with no identity raises on an empty input, as eager does."""
        if k.kind != "reduction":
            return []
        op = get_op(k.reduce["op"])
        if not op.reduction.empty_raises or \
                int(np.prod([self._size(d) for d in k.reduce["source_shape"]])) != 0:
            return []

        def raise_empty():
            raise ValueError(f"{op.name}() of an empty tensor has no identity value")
        return [raise_empty]

    def _cublas(self, k: Kernel) -> list:
        xp, g = self.xp, k.gemm
        out = self.arrays[k.out]
        a, b = self.arrays[g["a"]], self.arrays[g["b"]]
        a = a.T if g.get("a_transposed") else a
        b = b.T if g["transposed"] else b
        actions = []
        casts = []
        for operand in (a, b):
            if operand.dtype != out.dtype:  # eager promotes mixed dtypes: so does cuBLAS's input
                buf = xp.empty(operand.shape, out.dtype)
                actions.append(lambda buf=buf, src=operand: xp.copyto(buf, src, casting="unsafe"))
                operand = buf
            casts.append(operand)
        a, b = casts
        actions.append(lambda: xp.matmul(a, b, out=out))
        if k.body:
            n = out.size
            actions += self._launch(k.name + "_epilogue", (min(-(-n // BLOCK), _MAX_GRID),),
                                    (BLOCK,))
        return actions

    def _loop(self, loop: Loop):
        for name in loop.state + loop.outs:
            self.arrays[name] = self._buffer(name)
        if self.loops == "device" and not why_not_device_loop(loop):
            for k in loop.cond.steps + loop.body.steps:
                self.arrays[k.out] = self._buffer(k.out)
            checks = [a for k in loop.cond.steps + loop.body.steps for a in self._check_empty(k)]
            return _Sequence(checks + self._launch(loop_kernel_name(loop), (1,), (LOOP_BLOCK,)))
        return _HostLoop(self, loop)

    def _branch(self, br: Branch):
        for name in br.outs:
            self.arrays[name] = self._buffer(name)
        return _HostBranch(self, br)

    # ---- running ------------------------------------------------------------------------

    def run(self, inputs):
        """Copy the inputs in, run (or launch the graph), copy the outputs out."""
        xp = self.xp
        stream = xp.cuda.get_current_stream()
        if self.event is not None:
            # An earlier call may have been queued on another stream: it must finish with
            # the plan's buffers before this one writes them.
            stream.wait_event(self.event)
        for static, a in zip(self.static, inputs):
            _copy(xp, static, a, stream)
        self.calls += 1
        if self.capture and self.graph is None and self.calls >= 2:
            self._capture()
        if self.graph is not None:
            self.graph.launch(stream=stream)
        else:
            for act in self.actions:
                act()
        outs = []
        for o in self.outputs:
            fresh = xp.empty(o.shape, o.dtype)
            _copy(xp, fresh, o, stream)
            outs.append(fresh)
        if self.event is None:
            self.event = xp.cuda.Event(disable_timing=True)
        self.event.record(stream)
        return outs[0] if self.c.program.structure == "tensor" else tuple(outs)

    def _capture(self) -> None:
        """Capture the actions in a CUDA graph; if capture fails, keep launching them."""
        xp = self.xp
        # Captured work does not run; the graph runs where it is launched (the caller's
        # stream), so the capture stream needs no ordering with it.
        stream = xp.cuda.Stream(non_blocking=True)
        with stream:
            stream.begin_capture()
            try:
                for act in self.actions:
                    act()
            except Exception as err:  # noqa: BLE001 - a capture failure only costs speed
                try:
                    stream.end_capture()
                except Exception:  # noqa: BLE001, S110 - the capture is invalid anyway
                    pass
                self.capture = False
                self.c.notes.append(f"capture failed ({type(err).__name__}: {err}); "
                                    "launching kernels one by one")
                return
            graph = stream.end_capture()
        self.graph = graph


class _Sequence:
    """Actions run in order (a device-side loop with its empty-input checks)."""

    def __init__(self, actions):
        self.actions = actions

    def __call__(self):
        for act in self.actions:
            act()


class _HostLoop:
    """A ``while`` region driven by the host: one read-back of the test per iteration."""

    def __init__(self, plan: _Plan, loop: Loop):
        self.plan, self.loop = plan, loop
        arrays = plan.arrays
        self.cond = plan._block(loop.cond.steps)
        self.body = plan._block(loop.body.steps)
        *new, self.nxt = loop.body.results
        self.state = [arrays[s] for s in loop.state]
        self.init = [arrays[i] for i in loop.init]
        self.new = [arrays[v] for v in new]
        # New values read from other state variables are staged, or they would overwrite
        # each other (a, b = b, a).
        self.staged = [plan.xp.empty_like(s) if v in loop.state and v != name else None
                       for name, v, s in zip(loop.state, new, self.state)]
        self.outs = [arrays[o] for o in loop.outs]

    def __call__(self):
        xp, arrays = self.plan.xp, self.plan.arrays
        for s, i in zip(self.state, self.init):
            xp.copyto(s, i)
        for act in self.cond:
            act()
        go = bool(xp.asnumpy(arrays[self.loop.cond.results[0]]))
        while go:
            for act in self.body:
                act()
            for tmp, v in zip(self.staged, self.new):
                if tmp is not None:
                    xp.copyto(tmp, v)
            for s, tmp, v in zip(self.state, self.staged, self.new):
                if v is not s:
                    xp.copyto(s, tmp if tmp is not None else v)
            go = bool(xp.asnumpy(arrays[self.nxt]))
        for o, s in zip(self.outs, self.state):
            xp.copyto(o, s)


class _HostBranch:
    """A ``cond`` region: the test is read back, the taken block runs."""

    def __init__(self, plan: _Plan, br: Branch):
        self.plan, self.br = plan, br
        self.then = plan._block(br.then.steps)
        self.orelse = plan._block(br.orelse.steps)

    def __call__(self):
        xp, arrays, br = self.plan.xp, self.plan.arrays, self.br
        taken = br.then if bool(xp.asnumpy(arrays[br.cond])) else br.orelse
        for act in (self.then if taken is br.then else self.orelse):
            act()
        for out, value in zip(br.outs, taken.results):
            xp.copyto(arrays[out], arrays[value])
