"""``python -m fusionnet.fuzz``: the differential fuzzer's command line.

    python -m fusionnet.fuzz --seed 0 --cases 200 --workers 2 --out fuzz-out
    python -m fusionnet.fuzz --minutes 60 --out fuzz-out        # the long run
    python -m fusionnet.fuzz --case 17                          # one case, in this process
    python -m fusionnet.fuzz --show 17                          # print a case's source
    python -m fusionnet.fuzz --shrink fuzz-out/case_17.py       # a smaller repro

A run prints progress and one line per failing case on stderr, and exactly one JSON
summary line on stdout (fields in docs/fuzzing.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fusionnet.fuzz", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="run seed (case i has seed "
                   "seed*1000000+i)")
    p.add_argument("--cases", type=int, help="number of cases")
    p.add_argument("--minutes", type=float, help="stop starting cases after this long")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--out", help="folder for case_<seed>.py repros, results.jsonl, "
                   "summary.json and worker logs")
    p.add_argument("--timeout", type=float, default=180.0,
                   help="seconds one case may take before its worker is killed (180)")
    p.add_argument("--torch", action="store_true",
                   help="also compare eager fusionnet with PyTorch on each case")
    p.add_argument("--recycle", type=int, default=100,
                   help="cases per worker before a fresh one replaces it (default 100: "
                        "compiled code is never freed, so a worker's memory only grows)")
    p.add_argument("--cache-dir", help="FUSIONNET_CACHE_DIR of the workers (default: a "
                   "fresh folder per run)")
    p.add_argument("--case", type=int, help="run the case with this seed here and print it")
    p.add_argument("--show", type=int, help="print the source of the case with this seed")
    p.add_argument("--shrink", metavar="CASE_FILE", help="shrink a saved failing case (drop "
                   "statements while the mismatch stays) and print the result")
    p.add_argument("--kind", help="with --shrink: the mismatch kind to keep")
    return p


def main(argv=None) -> int:
    """Run the command line; returns the exit status (1 when any case failed)."""
    args = _parser().parse_args(argv)
    from .generate import generate  # noqa: PLC0415 - keep --help fast
    if args.show is not None:
        print(generate(args.show).source, end="")
        return 0
    if args.shrink:
        from .shrink import main as shrink  # noqa: PLC0415
        print(shrink(args.shrink, args.kind, log=sys.stderr), end="")
        return 0
    if args.case is not None:
        from .run import format_result, run_case  # noqa: PLC0415
        folder = args.out or tempfile.mkdtemp(prefix="fusionnet-fuzz-case-")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"case_{args.case}.py")
        with open(path, "w") as f:
            f.write(generate(args.case).source)
        result = run_case(path, torch_peer=args.torch)
        print(format_result(result))
        print(f"(source: {path})")
        return 1 if result.mismatches or result.harness_error else 0
    if args.cases is None and args.minutes is None:
        args.cases = 100
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    from .driver import run_fuzz  # noqa: PLC0415
    summary = run_fuzz(seed=args.seed, cases=args.cases, minutes=args.minutes,
                       workers=args.workers, out=args.out, timeout=args.timeout,
                       recycle=args.recycle,
                       torch_peer=args.torch, cache_dir=args.cache_dir)
    print(json.dumps(summary), flush=True)
    failed = any(summary[k] for k in ("forward_mismatches", "grad_mismatches",
                                      "mutation_mismatches", "exception_mismatches",
                                      "crashes", "timeouts", "harness_errors"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
