"""The ``fusionnet`` command line (``python -m fusionnet ...``).

Subcommands live in their own modules and register here: ``demo`` (below),
``bench`` (``fusionnet/bench/cli.py``), ``graph`` and ``explain``
(``fusionnet/cli_graph.py``). Each module exposes ``add_parser(subparsers)``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main"]

#: Modules that add subcommands; a missing one is skipped (it may not be built yet).
_SUBCOMMAND_MODULES = ("fusionnet.bench.cli", "fusionnet.cli_graph")


def _demo(_args) -> int:
    """Run the chapter's MLP eagerly and fused, and show gradients flowing."""
    import fusionnet as torch  # noqa: PLC0415
    from fusionnet import zoo  # noqa: PLC0415

    torch.manual_seed(0)
    X = torch.rand(2, 20)
    net = zoo.MLP()
    fused = torch.fuse(net)
    with torch.no_grad():
        eager, compiled = net(X), fused(X)
    print("MLP forward on X of shape", tuple(X.shape), "->", tuple(eager.shape))
    print("max |eager - fused| =", float((eager - compiled).abs().max()))
    net(X).sum().backward()
    print("grad of hidden.weight:", tuple(net.hidden.weight.grad.shape))
    print(torch.explain(net, X).summary())
    return 0


def main(argv=None) -> int:
    """Entry point of the ``fusionnet`` console script."""
    parser = argparse.ArgumentParser(prog="fusionnet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a short demo (checks the install)")
    demo.set_defaults(func=_demo)
    for name in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if not name.startswith(str(err.name)):
                raise
            continue
        module.add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
