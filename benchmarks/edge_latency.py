"""Latency of a signed edge package on this machine, per precision it ships, on one thread: the
single-row median through ``EdgeModel.predict_row`` and the batch throughput of ``predict_proba``
(raw features in, so encoding included, and the model alone). Prints a table; writes nothing.

    python -m benchmarks.edge_latency PACKAGE --public-key KEY.pem [--rows ROWS.csv|ROWS.parquet]

Without ``--rows``, rows are drawn (seeded) from the manifest's preprocessing constants: the work
per row, and so the latency, does not depend on the values.
"""

import argparse
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.results import machine
from pipeline.evergreen_edge import EdgeError, EdgeModel, read_rows

SINGLE_ROW_CALLS, ROUNDS, WARM_UP = 10_000, 5, 500
BATCH_ROWS, BATCH_REPEATS = 100_000, 3
Columns = Mapping[str, Sequence]


def synthetic_columns(manifest: Mapping, rows: int, seed: int = 0) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    preprocessing = manifest["preprocessing"]
    columns = {s["name"]: rng.normal(s["mean"], s["std"], rows).tolist() for s in preprocessing["numeric"]}
    return columns | {s["name"]: rng.choice(s["categories"], rows).tolist() for s in preprocessing["categorical"]}


def single_row_us(model: EdgeModel, rows: list[dict]) -> tuple[float, float, float]:
    """Median latency over ``SINGLE_ROW_CALLS`` calls in ``ROUNDS`` rounds, with the lowest and
    highest round median: a shared machine is noisy, and one figure would hide it."""
    for row in rows[:WARM_UP]:
        model.predict_row(row)
    clock, times, round_medians = time.perf_counter_ns, [], []
    for _ in range(ROUNDS):
        round_times = []
        for i in range(SINGLE_ROW_CALLS // ROUNDS):
            row = rows[i % len(rows)]
            start = clock()
            model.predict_row(row)
            round_times.append(clock() - start)
        times += round_times
        round_medians.append(statistics.median(round_times) / 1000)
    return statistics.median(times) / 1000, min(round_medians), max(round_medians)


def rows_per_second(predict, data) -> float:
    """Best of ``BATCH_REPEATS``: the figure least disturbed by other work on the machine."""
    best = min(_seconds(predict, data) for _ in range(BATCH_REPEATS))
    return BATCH_ROWS / best


def _seconds(predict, data) -> float:
    start = time.perf_counter()
    predict(data)
    return time.perf_counter() - start


def measure(package: Path, public_key: Path, precision: str, columns: Columns) -> dict:
    model = EdgeModel(package, public_key, precision=precision, threads=1)
    count = len(next(iter(columns.values())))
    rows = [{name: values[i] for name, values in columns.items()} for i in range(min(count, 1000))]
    batch = {name: np.resize(np.asarray(values), BATCH_ROWS) for name, values in columns.items()}
    return {
        "precision": precision,
        "single": single_row_us(model, rows),
        "batch": rows_per_second(model.predict_proba, batch),
        "batch_model": rows_per_second(model.predict_proba_encoded, model.encoder(batch)),
    }


def table(results: list[dict]) -> str:
    lines = ["| precision | single row, median (round medians) | batch rows/s, raw rows | batch rows/s, model only |",
             "|---|---|---|---|"]
    for r in results:
        median, low, high = r["single"]
        lines.append(f"| {r['precision']} | {median:.1f} µs ({low:.1f}–{high:.1f}) | {r['batch']:,.0f} | {r['batch_model']:,.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--public-key", type=Path, required=True)
    parser.add_argument("--rows", type=Path, help="a .csv or .parquet file of raw rows (default: synthetic rows)")
    args = parser.parse_args(argv)
    try:
        probe = EdgeModel(args.package, args.public_key)
        manifest = probe.manifest
        columns = read_rows(args.rows, probe.feature_order, probe.numeric_features) if args.rows else synthetic_columns(manifest, 10_000)
        columns = {name: np.asarray(values).tolist() for name, values in columns.items()}  # Python values, as a caller has
        results = [measure(args.package, args.public_key, p, columns) for p in sorted(manifest["models"]["precisions"])]
    except EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.package.name} ({manifest['version']}): {SINGLE_ROW_CALLS:,} single-row calls in {ROUNDS} rounds, "
          f"batches of {BATCH_ROWS:,} rows (best of {BATCH_REPEATS}); 1 thread; {machine(f'onnxruntime {ort.__version__}')}")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
