"""``fusionnet graph`` and ``fusionnet explain``: draw or explain a block from the command line.

``MODULE_SPEC`` is ``path/to/file.py:ClassName`` or ``package.module:ClassName``; the
class is built with no arguments and run on ``torch.rand`` inputs of each
``--input-shape`` (seeded, so pictures are reproducible)::

    fusionnet graph fusionnet.zoo:MLP --input-shape 2,20 -o mlp.svg --stage both
    fusionnet explain model.py:MyNet --input-shape 2,20 --input-shape 2,5

Usage errors (bad spec, missing class, bad shape or dtype) print one line and
exit with 2; an error raised by the block itself prints one line and exits with 1.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import sys

__all__ = ["add_parser", "load_module_class", "parse_shape"]

_DTYPES = ("float32", "float64")


class UsageError(ValueError):
    """A bad command line: reported in one line, exit code 2."""


def parse_shape(text: str) -> tuple[int, ...]:
    """``"2,20"`` (or ``"2x20"``) -> ``(2, 20)``; ``""`` or ``"()"`` is a 0-d input."""
    body = text.strip().strip("()[]").strip()
    if not re.fullmatch(r"(\d+\s*([,x]\s*\d+\s*)*,?)?", body):
        raise UsageError(f"bad --input-shape {text!r}: expected sizes like 2,20")
    dims = tuple(int(p) for p in re.split(r"[,x]", body) if p.strip())
    return dims


def load_module_class(spec: str) -> type:
    """The class named by ``file.py:Class`` or ``package.module:Class``."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise UsageError(f"bad module spec {spec!r}: expected path/to/file.py:ClassName "
                         "or package.module:ClassName")
    if where.endswith(".py") or os.sep in where or "/" in where:
        if not os.path.isfile(where):
            raise UsageError(f"bad module spec {spec!r}: no such file {where!r}")
        # A private name: a user file must not shadow (or be cached as) a real module.
        mod_name = "_fusionnet_cli_" + os.path.splitext(os.path.basename(where))[0]
        loader = importlib.util.spec_from_file_location(mod_name, where)
        module = importlib.util.module_from_spec(loader)
        sys.modules[mod_name] = module  # dataclasses and pickling look classes up here
        try:
            loader.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - any import failure is the user's file
            sys.modules.pop(mod_name, None)
            raise UsageError(f"cannot import {where}: {type(err).__name__}: {err}") from None
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as err:
            raise UsageError(f"bad module spec {spec!r}: cannot import {where!r} ({err})") \
                from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise UsageError(f"bad module spec {spec!r}: {where} has no class {name!r}")
    return cls


def _build(args):
    """(module, inputs) from the parsed command line."""
    import fusionnet as torch  # noqa: PLC0415 - the package imports this CLI lazily

    shapes = [parse_shape(s) for s in args.input_shape]
    if args.dtype not in _DTYPES:
        raise UsageError(f"bad --dtype {args.dtype!r}: choose one of {', '.join(_DTYPES)}")
    cls = load_module_class(args.module_spec)
    torch.manual_seed(args.seed)
    try:
        module = cls()
    except TypeError as err:
        raise UsageError(f"cannot build {cls.__name__}() with no arguments: {err}") from None
    if not shapes:
        wanted = _forward_inputs(module)
        raise UsageError(f"{cls.__name__}.forward takes {wanted}: give one --input-shape per "
                         "tensor input, e.g. --input-shape 2,20")
    dtype = getattr(torch, args.dtype)
    inputs = [torch.rand(*shape, dtype=dtype) for shape in shapes]
    if hasattr(module, "eval"):
        module.eval()  # dropout in training mode would be a graph break
    return module, inputs


def _forward_inputs(module) -> str:
    """``1 input (X)`` / ``2 inputs (a, b)`` from forward's signature, for usage errors."""
    import inspect  # noqa: PLC0415

    try:
        params = [p.name for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.default is p.empty]
    except (TypeError, ValueError):
        return "tensor inputs"
    count = len(params)
    return f"{count} input{'s' if count != 1 else ''} ({', '.join(params)})"


def _run(args, action) -> int:
    try:
        module, inputs = _build(args)
    except UsageError as err:
        print(f"fusionnet {args.command}: error: {err}", file=sys.stderr)
        return 2
    try:
        action(module, inputs)
    except Exception as err:  # noqa: BLE001 - the block's own errors: one line, not a trace
        shapes = ", ".join(str(tuple(x.shape)) for x in inputs) or "none"
        print(f"fusionnet {args.command}: error: {type(module).__name__} on inputs of shape "
              f"{shapes}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


def _graph(args) -> int:
    from .viz import export_graph  # noqa: PLC0415

    def action(module, inputs):
        path = export_graph(module, args.output, *inputs, stage=args.stage)
        print(f"wrote {path}")

    if os.path.splitext(args.output)[1].lower() not in (".dot", ".svg", ".png", ".json"):
        print(f"fusionnet graph: error: cannot tell the format of {args.output!r}; use .dot, "
              ".svg, .png or .json", file=sys.stderr)
        return 2
    return _run(args, action)


def _explain(args) -> int:
    from .explain import explain  # noqa: PLC0415

    return _run(args, lambda module, inputs: print(explain(module, *inputs)))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("module_spec", metavar="MODULE_SPEC",
                   help="path/to/file.py:ClassName or package.module:ClassName "
                        "(built with no arguments)")
    p.add_argument("--input-shape", action="append", default=[], metavar="SHAPE",
                   help="shape of one example input, e.g. 2,20; repeat for several inputs")
    p.add_argument("--dtype", default="float32", help="input dtype: float32 (default), float64")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and inputs (0)")


def add_parser(subparsers) -> None:
    """Register the ``graph`` and ``explain`` subcommands on ``subparsers``."""
    graph = subparsers.add_parser("graph", help="draw a block's graph (.svg/.png/.dot/.json)",
                                  description="Trace a block, optimize it and draw the graph.")
    _common(graph)
    graph.add_argument("-o", "--output", required=True,
                       help="output file; the suffix picks the format (.svg .png .dot .json)")
    graph.add_argument("--stage", choices=("optimized", "traced", "both"), default="optimized",
                       help="which graph to draw (default: optimized; both: side by side)")
    graph.set_defaults(func=_graph)
    explain = subparsers.add_parser("explain", help="print fusionnet.explain's report",
                                    description="Trace, optimize and explain a block.")
    _common(explain)
    explain.set_defaults(func=_explain)
