"""The estimate of accuracy without labels against the accuracy measured when the labels came back,
per kind of day, from backtests' ``timeline.csv`` (``estimated_accuracy`` is made before the day's
labels are used).

    python -m deploy.backtest --dataset <stream>/dataset.yaml --warmup 14 --out OUT/<stream> ...
    python -m benchmarks.estimate_error OUT covariate sudden stationary

The streams are ``examples/streams.py``'s; days before a stream's first change are stationary.
"""

import argparse
import json
from pathlib import Path

import polars as pl

from examples import streams

CHANGED_DAY = {"covariate": "covariate-only shift", "wandering": "covariate-only shift", "mixing": "covariate-only shift",
               "sudden": "label-rule change", "gradual": "gradual rule change", "recurring": "recurring rule change"}
STATIONARY = "stationary (before the change)"


def day_kinds(timeline: pl.DataFrame, spec: streams.StreamSpec) -> pl.DataFrame:
    """The timeline with each day's kind and its absolute estimate error."""
    changed = pl.col("day").cast(pl.Date) >= spec.events[0] if spec.events else pl.lit(False)
    return timeline.with_columns(
        pl.when(changed).then(pl.lit(CHANGED_DAY.get(spec.kind, spec.kind))).otherwise(pl.lit(STATIONARY)).alias("day_kind"),
        (pl.col("estimated_accuracy") - pl.col("accuracy")).abs().alias("error"),
    )


def errors(out: Path, name: str) -> list[dict]:
    """One row per kind of day of stream ``name``'s backtest in ``out/name``."""
    days = day_kinds(pl.read_csv(out / name / "timeline.csv", try_parse_dates=True), streams.STREAMS[name])
    rows = []
    for (kind,), group in days.group_by("day_kind", maintain_order=True):
        error = group["error"].drop_nulls().drop_nans()
        rows.append({"stream": name, "day kind": kind, "days": group.height, "days with an estimate": error.len(),
                     "mean error": round(error.mean(), 4) if error.len() else None,
                     "max error": round(error.max(), 4) if error.len() else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder holding each stream's backtest output")
    parser.add_argument("streams", nargs="+", help="stream names (examples/streams.py)")
    args = parser.parse_args(argv)
    print("| stream | day kind | days | days with an estimate | mean error | max error | mean accuracy (Evergreen) |")
    print("|---|---|---|---|---|---|---|")
    for name in args.streams:
        accuracy = json.loads((args.out / name / "summary.json").read_text())["mean_accuracy"]["evergreen"]
        for row in errors(args.out, name):
            print("| " + " | ".join(str(v) for v in row.values()) + f" | {accuracy:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
