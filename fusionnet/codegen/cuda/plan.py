"""One placement of a compiled CUDA Program: its buffers, views, bound launches, graph.

A :class:`Plan` is built on the first call for a placement (concrete sizes, device,
parameter addresses; see ``runner.py``): every buffer is allocated, every layout view
built and every kernel's arguments bound, so running it is a fixed list of *actions*
(argument-free callables). From its second call a plan that may be captured is recorded
in a CUDA graph and replayed; ``hostflow.py`` holds the actions that read a value back
(host loops, branches), which keep a plan out of a graph.

Choices, read from the environment when a plan is built (:func:`options`):
``FUSIONNET_CUDA_GRAPHS=0`` (no capture), ``FUSIONNET_CUDA_GEMM=tiled|cublas``,
``FUSIONNET_CUDA_LOOPS=host|device``.
"""
from __future__ import annotations

import os

import numpy as np

from ...ops import get_op
from ...runtime.symbolic import evaluate
from ..lower import Branch, Kernel, Loop, View, walk_steps
from .hostflow import HostBranch, HostLoop, Sequence
from .kernels import BLOCK, RBLOCK, TILE, reduction_axes
from .loops import LOOP_BLOCK, why_not_device_loop
from .module import loop_kernel_name

__all__ = ["Plan", "options", "pointer", "TILED_MAX_MACS", "MAX_PLANS"]

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


def pointer(a) -> int:
    """The device address of ``a``'s first element (a host address for NumPy arrays)."""
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


class Plan:
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
        self.actions = self.block(prog.steps, top=True)
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

    def block(self, steps, top: bool = False) -> list:
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
                for array, _ in step.stores:   # side outputs: buffers of their own
                    self.arrays[array] = self._buffer(array)
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
                for array in k.outs:
                    self.arrays[array] = self._buffer(array)
            checks = [a for k in loop.cond.steps + loop.body.steps for a in self._check_empty(k)]
            return Sequence(checks + self._launch(loop_kernel_name(loop), (1,), (LOOP_BLOCK,)))
        return HostLoop(self, loop)

    def _branch(self, br: Branch):
        for name in br.outs:
            self.arrays[name] = self._buffer(name)
        return HostBranch(self, br)

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
