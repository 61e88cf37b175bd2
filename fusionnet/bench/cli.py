"""``fusionnet bench``: run the eager-vs-fused suite, print the table, write results.json
and latency.png. Exit status 1 when any implementation gave a wrong result."""
from __future__ import annotations

import argparse
import os
import sys

__all__ = ["add_parser", "main", "run"]


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``bench`` subcommand on a ``fusionnet`` subparsers object."""
    from .suite import BATCH_SIZES, IMPLS, MODELS, QUICK  # noqa: PLC0415

    p = subparsers.add_parser(
        "bench", help="benchmark eager vs fused (and NumPy/numba/PyTorch/JAX peers)",
        description=__doc__.splitlines()[0])
    p.add_argument("--models", type=_csv, default=None,
                   help=f"comma-separated, from: {', '.join(MODELS)} (default: all)")
    p.add_argument("--batch-sizes", type=_ints, default=None,
                   help=f"comma-separated (default: {','.join(map(str, BATCH_SIZES))})")
    p.add_argument("--impls", type=_csv, default=None,
                   help=f"comma-separated, from: {', '.join(IMPLS)} (default: all; peers that "
                        "are not installed are skipped with a note)")
    p.add_argument("--quick", action="store_true",
                   help=f"a subset that takes under a minute: {', '.join(QUICK['models'])} at "
                        f"batch {','.join(map(str, QUICK['batch_sizes']))}, impls "
                        f"{','.join(QUICK['impls'])}, short timing (explicit options win)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timing samples per row (default 7; 5 with --quick)")
    p.add_argument("--sample-ms", type=float, default=None,
                   help="minimum length of one timing sample, ms (default 20; 10 with --quick)")
    p.add_argument("--no-compile-time", dest="compile_time", action="store_false",
                   help="skip the cold/cached compile-time subprocesses")
    p.add_argument("--training", dest="training", action="store_true", default=None,
                   help="also time the training-step section (MLP step with MSE + SGD: "
                        "eager, fused module, fused step, PyTorch, a hand-written numba "
                        "step); on by default for a full run without --models/--impls/--quick")
    p.add_argument("--no-training", dest="training", action="store_false",
                   help="skip the training-step section")
    p.add_argument("--training-only", action="store_true",
                   help="run only the training-step section")
    p.add_argument("--out", default="bench-out", help="output folder (default: bench-out/)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress line on stderr")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Run the suite as configured by the parsed ``args``; returns the exit status."""
    from . import report  # noqa: PLC0415
    from .suite import BATCH_SIZES, IMPLS, QUICK, run_suite  # noqa: PLC0415

    base = QUICK if args.quick else {"models": None, "batch_sizes": BATCH_SIZES,
                                     "impls": IMPLS, "repeats": 7, "min_sample_s": 0.02}
    pick = lambda given, key: base[key] if given is None else given  # noqa: E731
    sample_s = None if args.sample_ms is None else args.sample_ms / 1e3
    training = args.training
    if training is None:
        training = not (args.quick or args.models or args.impls)
    if args.training_only:
        return _run_training_only(args, pick(args.repeats, "repeats"),
                                  pick(sample_s, "min_sample_s"))
    try:
        results = run_suite(models=pick(args.models, "models"),
                            batch_sizes=pick(args.batch_sizes, "batch_sizes"),
                            impls=pick(args.impls, "impls"), repeats=pick(args.repeats, "repeats"),
                            min_sample_s=pick(sample_s, "min_sample_s"),
                            measure_compile=args.compile_time,
                            progress=sys.stderr if args.progress else None,
                            argv=getattr(args, "argv", None) or ["fusionnet"] + sys.argv[1:])
    except ValueError as err:
        print(f"fusionnet bench: {err}", file=sys.stderr)
        return 2
    if training:
        from . import training as train  # noqa: PLC0415

        results["training"] = train.run_training(
            repeats=pick(args.repeats, "repeats"), min_sample_s=pick(sample_s, "min_sample_s"),
            progress=sys.stderr if args.progress else None)
        results["training_ratios"] = train.ratios(results["training"])
    os.makedirs(args.out, exist_ok=True)
    print(report.summary_text(results))
    if training:
        print()
        print(train.summary_text(results["training"]))
    print()
    print("wrote", report.write_json(results, os.path.join(args.out, "results.json")))
    print(report.plot(results, os.path.join(args.out, "latency.png")))
    failed = [r for r in results["records"] if r["status"] == "FAILED"]
    if failed:
        print(f"{len(failed)} row(s) FAILED the correctness check: " + ", ".join(
            f"{r['model']} b={r['batch']} {r['impl']}" for r in failed), file=sys.stderr)
    return 1 if failed else 0


def _run_training_only(args, repeats, sample_s) -> int:
    """``--training-only``: the training-step section alone, printed and written to
    ``training.json``."""
    from . import report  # noqa: PLC0415
    from . import training as train  # noqa: PLC0415
    from .machine import machine_info  # noqa: PLC0415

    rows = train.run_training(repeats=repeats, min_sample_s=sample_s,
                              progress=sys.stderr if args.progress else None)
    results = {"machine": machine_info(), "training": rows,
               "training_ratios": train.ratios(rows),
               "argv": getattr(args, "argv", None) or ["fusionnet"] + sys.argv[1:]}
    os.makedirs(args.out, exist_ok=True)
    print(train.summary_text(rows))
    print("wrote", report.write_json(results, os.path.join(args.out, "training.json")))
    return 1 if any(r["status"] == "FAILED" for r in rows) else 0


def main(argv=None) -> int:
    """``fusionnet bench`` on its own (used by benchmarks/run_suite.py)."""
    parser = argparse.ArgumentParser(prog="fusionnet")
    add_parser(parser.add_subparsers(dest="command", required=True))
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "bench":
        argv = ["bench"] + argv
    args = parser.parse_args(argv)
    args.argv = ["fusionnet"] + argv
    return args.func(args)
