"""The training-step section of ``fusionnet bench`` (``fusionnet/bench/training.py``)."""
import argparse

from fusionnet.bench import cli
from fusionnet.bench import training as T


def test_training_rows_are_checked_against_eager_and_give_ratios():
    rows = T.run_training(batches=(2,), impls=("eager", "fused-step", "numba-step",
                                               "fused-module"),
                          repeats=2, min_sample_s=0.002)
    assert [r["status"] for r in rows] == ["ok"] * 4, rows
    ratios = T.ratios(rows)[2]
    # Timings on a shared machine are not asserted; the ratios are only computed.
    assert ratios["fused-step / numba-step"] > 0 and ratios["eager / fused-module"] > 0
    assert ratios["fused-step / torch"] is None  # torch not in this run
    text = T.summary_text(rows)
    assert "fused-step" in text and "b=2:" in text


def test_cli_has_the_training_flags():
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "--training-only"])
    assert args.training_only and args.training is None
    assert parser.parse_args(["bench", "--no-training"]).training is False
