"""The ``fusionnet`` command line (``python -m fusionnet ...``)."""
from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _demo(_args) -> int:
    """Run the chapter's MLP eagerly and show gradients flowing: a smoke test of the install."""
    import fusionnet as torch  # noqa: PLC0415

    torch.manual_seed(0)
    X = torch.rand(2, 20)
    W1 = torch.randn(20, 256, requires_grad=True)
    W2 = torch.randn(256, 10, requires_grad=True)
    out = torch.relu(X @ W1) @ W2
    print("MLP forward on X of shape", tuple(X.shape), "->", tuple(out.shape))
    print(out)
    out.sum().backward()
    print("grad of W1:", tuple(W1.grad.shape), "grad of W2:", tuple(W2.grad.shape))
    print("ops in the table:", len(torch.ops.OPS))
    return 0


def main(argv=None) -> int:
    """Entry point of the ``fusionnet`` console script."""
    parser = argparse.ArgumentParser(prog="fusionnet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a short eager demo (checks the install)")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
