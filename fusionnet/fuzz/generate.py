"""``generate(seed) -> Case``: a random block as standalone Python source.

The source uses only the public API, as a user writes it (``import fusionnet as torch``,
``from fusionnet import nn``, ``from fusionnet.nn import functional as F``): one
``nn.Module`` subclass ``Block`` with ``__init__`` and ``forward``, then the case's data
(``SEED``, ``BATCHES``, ``INPUTS``, ``MUTATIONS``, ``RANDOM_OPS``, ``LOWEST_FLOAT``) and a
``__main__`` footer, so a saved case is its own reproduction script. The same seed
always gives the same source.

A case is a few (2 to 9) generator steps over a pool that starts with the inputs; about
half the cases use only generators whose code the engine can compile ("fusable-only"),
so that fused code, not only the eager fallback, is what gets compared.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from . import gen_blocks, gen_conv, gen_layout, gen_math  # noqa: F401 - register generators
from .builder import GENERATORS, Builder
from .model import Bat, Val, is_float

__all__ = ["Case", "generate", "MUTATION_KINDS", "IMPORTS", "TORCH_IMPORTS"]

IMPORTS = ("import fusionnet as torch\n"
           "from fusionnet import nn\n"
           "from fusionnet.nn import functional as F\n")
#: The same block on PyTorch (``--torch``): only the imports differ.
TORCH_IMPORTS = ("import torch\n"
                 "from torch import nn\n"
                 "from torch.nn import functional as F\n")

#: Weight changes applied to the eager and the fused module alike between calls.
MUTATION_KINDS = ("data_mul", "no_grad_add", "replace_param", "load_state_dict",
                  "data_assign", "sgd_step", "buffer_inplace", "constant_replace")

_BATCHES = (1, 1, 2, 2, 3, 4, 5, 7, 8, 16, 31, 64, 97, 113, 128, 257, 500, 1000)
_DIMS = (1, 1, 2, 3, 4, 5, 8)
_FLOAT_REGIMES = (("normal", 55), ("positive", 10), ("tiny", 8), ("huge", 8),
                  ("special", 14), ("mixed", 5))
_INT_REGIMES = (("small", 50), ("index", 25), ("wide", 10), ("limits", 15))


@dataclass
class Case:
    """One generated case.

    Attributes:
        seed: the seed it was generated from (and its input data is drawn from).
        source: the complete standalone module source.
        inputs: the input specs (see :mod:`fusionnet.fuzz.data`).
        batches: the two batch sizes of the first and second call.
        mutations: weight changes applied before the later calls.
        generators: names of the generators that built it, in order.
        fusable_only: whether only compilable generators were used.
        outputs: the generator's model of the outputs: (shape, dtype) each, with "B".
        structure: "tensor", "tuple" or "list".
    """

    seed: int
    source: str
    inputs: list
    batches: tuple
    mutations: list
    generators: list = field(default_factory=list)
    fusable_only: bool = False
    outputs: list = field(default_factory=list)
    structure: str = "tensor"


def _weighted(rng: random.Random, pairs) -> str:
    names, weights = zip(*pairs)
    return rng.choices(names, weights)[0]


def _input_specs(b: Builder) -> list[dict]:
    rng = b.rng
    count = rng.choices([1, 2, 3], [60, 30, 10])[0]
    rank = rng.choices([1, 2, 3, 4], [15, 55, 20, 10])[0]
    first = ["B"] + [rng.choice(_DIMS) for _ in range(rank - 1)]
    specs = []
    for i in range(count):
        if i == 0:
            shape, dtype = first, b.fdt if rng.random() < 0.85 else rng.choice(
                ["float32", "float64", "int64", "bool"])
        else:
            dtype = rng.choices([b.fdt, "float32", "int64", "bool"], [50, 15, 25, 10])[0]
            r = rng.random()
            if r < 0.45:
                shape = list(first)
            elif r < 0.7:  # broadcast-compatible: some dims 1
                shape = ["B"] + [d if rng.random() < 0.6 else 1 for d in first[1:]]
            elif r < 0.93:
                shape = ["B"] + [rng.choice(_DIMS) for _ in range(rng.randint(0, 2))]
            else:  # no batch dimension at all
                shape = [rng.choice(_DIMS) for _ in range(rng.randint(1, 2))]
        spec = {"shape": shape, "dtype": dtype, "requires_grad": False}
        if is_float(dtype):
            spec["regime"] = _weighted(rng, _FLOAT_REGIMES)
            spec["requires_grad"] = rng.random() < 0.6
        elif dtype == "bool":
            spec["regime"] = "random"
        else:
            regime = _weighted(rng, _INT_REGIMES)
            if regime == "index":
                regime = f"index:{rng.choice([1, 2, 3, 4])}"
            spec["regime"] = regime
        specs.append(spec)
    return specs


def _input_vals(specs: list) -> list[Val]:
    vals = []
    for i, spec in enumerate(specs):
        shape = tuple(Bat(1) if d == "B" else d for d in spec["shape"])
        bound = None
        if spec["regime"].startswith("index"):
            bound = int(spec["regime"].partition(":")[2])
        vals.append(Val(f"x{i}", shape, spec["dtype"], grad=spec["requires_grad"],
                        is_input=True, index_bound=bound))
    return vals


def _step(b: Builder) -> None:
    gens = [g for g in GENERATORS if g.fusable or not b.fusable_only]
    weights = [g.weight for g in gens]
    for _ in range(10):
        g = b.rng.choices(gens, weights)[0]
        mark = (len(b.body), len(b.init), len(b.pool))
        if g.fn(b):
            b.used.append(g.name)
            return
        # A generator that gave up may have written a constant or layer first: undo it.
        del b.body[mark[0]:], b.init[mark[1]:], b.pool[mark[2]:]


def _outputs(b: Builder) -> tuple[list[Val], str]:
    made = [v for v in b.pool if not v.is_input and not v.ragged]
    if not made:
        v = b.pool[0]
        made = [b.new(f"{v.name} * 1" if v.dtype != "bool" else f"{v.name}.float()", v.shape,
                      v.dtype if v.dtype != "bool" else "float32", grad=v.grad)]
    outs = [made[-1]]
    for _ in range(b.rng.choices([0, 1, 2], [65, 25, 10])[0]):
        extra = b.choice(made)
        if extra not in outs:
            outs.append(extra)
    if not any(is_float(v.dtype) for v in outs):
        floats = [v for v in made if is_float(v.dtype)]
        if floats:
            outs.append(floats[-1])
    if len(outs) == 1:
        return outs, "tensor"
    return outs, b.rng.choices(["tuple", "list"], [3, 1])[0]


def _render(case_seed: int, b: Builder, specs: list, outs: list[Val], structure: str,
            mutations: list) -> str:
    args = ", ".join(f"x{i}" for i in range(len(specs)))
    init = "".join(f"        {line}\n" for line in b.init)
    body = "".join(f"        {line}\n" for line in b.body)
    names = ", ".join(v.name for v in outs)
    ret = {"tensor": names, "tuple": names, "list": f"[{names}]"}[structure]
    used = ", ".join(dict.fromkeys(b.used)) or "none"
    dtypes = {v.dtype for v in b.pool}  # float32 math anywhere: float32 tolerances
    lowest = "float32" if "float32" in dtypes else "float64" if "float64" in dtypes else None
    return (f'"""fusionnet fuzz case {case_seed} (generated: {used}).\n\n'
            f"Run this file to compare eager and fused on it; it prints every mismatch.\n"
            f'"""\n'
            f"{IMPORTS}\n\n"
            f"class Block(nn.Module):\n"
            f"    def __init__(self):\n"
            f"        super().__init__()\n"
            f"{init}\n"
            f"    def forward(self, {args}):\n"
            f"{body}"
            f"        return {ret}\n\n\n"
            f"SEED = {case_seed}\n"
            f"BATCHES = {tuple(b.batches)!r}\n"
            f"INPUTS = {specs!r}\n"
            f"MUTATIONS = {mutations!r}\n"
            f"RANDOM_OPS = {b.random_ops!r}\n"
            f"LOWEST_FLOAT = {lowest!r}\n\n\n"
            f'if __name__ == "__main__":\n'
            f"    import sys\n\n"
            f"    from fusionnet.fuzz.run import main_for_file\n"
            f"    sys.exit(main_for_file(__file__))\n")


def generate(seed: int) -> Case:
    """The case for ``seed``: deterministic, standalone, public API only."""
    rng = random.Random(seed)
    fdt = "float64" if rng.random() < 0.25 else "float32"
    b1 = rng.choice(_BATCHES) if rng.random() < 0.8 else rng.randint(1, 1000)
    b2 = b1
    while b2 == b1:
        b2 = rng.choice(_BATCHES) if rng.random() < 0.8 else rng.randint(1, 1000)
    b = Builder(rng, fdt, (b1, b2), fusable_only=rng.random() < 0.45)
    specs = _input_specs(b)
    for v in _input_vals(specs):
        b.add(v)
    for _ in range(rng.randint(2, 9)):
        _step(b)
    outs, structure = _outputs(b)
    mutations = rng.sample(MUTATION_KINDS, rng.randint(1, 3))
    source = _render(seed, b, specs, outs, structure, mutations)
    model = [(tuple("B" if d == Bat(1) else repr(d) if isinstance(d, Bat) else d
                    for d in v.shape), v.dtype) for v in outs]
    return Case(seed, source, specs, (b1, b2), mutations, list(b.used), b.fusable_only, model,
                structure)
