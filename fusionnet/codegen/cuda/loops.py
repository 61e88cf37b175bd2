"""A ``while`` region as one CUDA kernel: the device-side loop.

A data-dependent loop otherwise needs the host to read the test back after every
iteration (a synchronisation each time, and no CUDA graph around it). Where the loop's
test and body are elementwise and reduction kernels only (``why_not_device_loop``), the
whole loop runs in **one block**: every kernel of the test and the body is rendered in
block-cooperative form (``kernels.elementwise_block`` / ``reduction_block`` with
``mode="block"``), separated by ``__syncthreads()``; the block reads the 0-d test itself and
copies the new state over the old. One launch computes the loop, so it can sit inside the
forward's captured graph. One block is the price: it suits the small state a
data-dependent loop carries (the chapter's ``FixedHiddenMLP``); the host loop
(``runner.py``) remains for the rest, and both are to be measured on a GPU.
"""
from __future__ import annotations

from ..lower import Kernel, Loop, Program
from .kernels import (IND, RBLOCK, CudaKernel, elementwise_block, loaded_arrays,
                      reduction_block, shared_declarations, signature)

__all__ = ["why_not_device_loop", "render_loop", "LOOP_BLOCK"]

#: Threads of the one block a device-side loop runs in: its reductions' shared-memory
#: tree has RBLOCK slots, so it may not be more.
LOOP_BLOCK = RBLOCK


def why_not_device_loop(loop: Loop) -> str:
    """Why ``loop`` cannot run as one device-side kernel ('' when it can)."""
    for step in loop.cond.steps + loop.body.steps:
        if not isinstance(step, Kernel):
            return f"its body holds a {type(step).__name__.lower()} (only kernels run in a " \
                   "device-side loop)"
        if step.kind not in ("elementwise", "reduction"):
            return f"its body holds a {step.kind} kernel (only elementwise and reduction " \
                   "kernels run in one block)"
    *new, _ = loop.body.results
    for i, value in enumerate(new):
        if value in loop.state and loop.state.index(value) != i:
            return "its state variables are permuted by the body (copied in turn, they " \
                   "would overwrite each other)"
    return ""


def _copy(dst: str, src: str, dims: list, ind: str) -> list[str]:
    """Block-strided copy of ``src`` (any strides) into the contiguous ``dst``."""
    rank = len(dims)
    names = [f"i{i}" for i in range(rank)]
    index = " + ".join(f"{n} * {src}_s{j}" for j, n in enumerate(names)) or "0"
    product = " * ".join(f"({d})" for d in dims) or "1LL"
    lines = [f"{ind}{{", f"{ind}{IND}const long long n_ = {product};",
             f"{ind}{IND}for (long long e_ = threadIdx.x; e_ < n_; e_ += blockDim.x) {{"]
    inner = ind + IND * 2
    if names:
        lines.append(f"{inner}long long e_r_ = e_;")
        for j in range(rank - 1, 0, -1):
            lines.append(f"{inner}const long long {names[j]} = e_r_ % {dims[j]}; "
                         f"e_r_ /= {dims[j]};")
        lines.append(f"{inner}const long long {names[0]} = e_r_;")
    lines += [f"{inner}{dst}[e_] = {src}[{index}];", f"{ind}{IND}}}", f"{ind}}}"]
    return lines


def render_loop(prog: Program, loop: Loop, name: str) -> CudaKernel:
    """The one-block kernel that runs ``loop`` (its test, body and state copies)."""
    kernels = loop.cond.steps + loop.body.steps
    arrays: list[str] = []
    for k in kernels:
        arrays += k.outs + loaded_arrays(k)
    *new, nxt = loop.body.results
    arrays += loop.state + loop.init + new + loop.outs + [loop.cond.results[0], nxt]
    arrays = [a for a in dict.fromkeys(arrays) if a not in prog.scalars]
    params = [("array", a, a, False) for a in arrays]
    body = shared_declarations(kernels)
    sizes: dict = {}

    def dims_of(shape, prefix):
        names = [f"{prefix}{i}" for i in range(len(shape))]
        for d, n in zip(shape, names):
            sizes[n] = d
        return names

    def step_lines(k, j):
        if k.kind == "reduction":
            dims = dims_of(k.reduce["source_shape"], f"L{j}_d")
            return reduction_block(k, dims, "block", IND) + [f"{IND}__syncthreads();"]
        dims = dims_of(k.shape, f"L{j}_d")
        return elementwise_block(k, dims, "block", IND) + [f"{IND}__syncthreads();"]

    for i, (state, init) in enumerate(zip(loop.state, loop.init)):
        body += _copy(state, init, dims_of(prog.shapes[state], f"S{i}_d"), IND)
    body.append(f"{IND}__syncthreads();")
    j = 0
    for k in loop.cond.steps:
        body += step_lines(k, j)
        j += 1
    body += [f"{IND}bool go_ = {loop.cond.results[0]}[0];", f"{IND}__syncthreads();",
             f"{IND}while (go_) {{"]
    for k in loop.body.steps:
        body += [IND + line for line in step_lines(k, j)]
        j += 1
    for i, (state, value) in enumerate(zip(loop.state, new)):
        if value != state:
            body += [IND + line for line in _copy(state, value, [f"S{i}_d{q}" for q in
                                                                 range(len(prog.shapes[state]))],
                                                  IND)]
    body += [f"{IND * 2}__syncthreads();", f"{IND * 2}go_ = {nxt}[0];",
             f"{IND * 2}__syncthreads();", f"{IND}}}"]
    for i, (out, state) in enumerate(zip(loop.outs, loop.state)):
        body += _copy(out, state, [f"S{i}_d{q}" for q in range(len(prog.shapes[state]))], IND)
    params += [("size", d, n) for n, d in sizes.items()]
    source = "\n".join([signature(name, params, prog) + " {"] + body + ["}"])
    return CudaKernel(name, "loop", params, source, loop, ())
