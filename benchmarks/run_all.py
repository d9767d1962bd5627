"""Benchmarks for the embedded default, recorded in benchmarks/RESULTS.md (``make bench``).

1. ``make run``'s main work (``python -m deploy.run_main --days 14``) in a fresh DAGSTER_HOME and
   data directory: wall time and peak resident memory (the launcher process and its children).
2. Teacher and student accuracy / macro-F1 on the newest test day, from that run's registry entry.
3. Inference on that run's held-out test rows, one thread: each precision (fp32, int8) of the signed
   package through the edge runtime (single raw row: median of 10,000 calls; batch: rows per
   second; macro-F1) against LightGBM's own predict on the same rows.
4. The feedback loop: the 60-day replay, teacher updates, drift test cost (``benchmarks/feedback.py``).
"""

import argparse
import datetime as dt
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks import edge_latency, feedback
from benchmarks.results import machine, record

ROOT = Path(__file__).resolve().parent.parent
SINGLE_ROW_CALLS = 10_000


def run_main(data_dir: Path) -> dict:
    # A fixed id-hashing key: row ids order rows that share a timestamp in the time-ordered split,
    # so a fresh random key per run would move the split boundary and the figures with it.
    env = dict(os.environ, EVERGREEN_DATA_DIR=str(data_dir), DAGSTER_HOME=str(data_dir / "dagster_home"),
               DAGSTER_DISABLE_TELEMETRY="1", EVERGREEN_HASH_KEY=os.environ.get("EVERGREEN_HASH_KEY", "evergreen-benchmark"))
    env.pop("EVERGREEN_DATASET", None)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "deploy.run_main", "--days", "14"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"deploy.run_main failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"wall_s": wall, "peak_rss_mib": peak_kib / 1024, "output": done.stdout}


def _median_us(fn, calls: int, rounds: int = 5) -> tuple[float, float, float]:
    """Median latency over ``calls`` calls taken in ``rounds`` rounds, with the lowest and highest
    round median: this kind of machine is shared, and one figure would hide its noise."""
    all_times, round_medians = [], []
    for _ in range(rounds):
        times = []
        for _ in range(calls // rounds):
            t = time.perf_counter_ns()
            fn()
            times.append(time.perf_counter_ns() - t)
        all_times += times
        round_medians.append(statistics.median(times) / 1000)
    return statistics.median(all_times) / 1000, min(round_medians), max(round_medians)


def inference(data_dir: Path) -> dict:
    """Each precision of the production package through the edge runtime, and LightGBM, on the
    run's test rows, one thread."""
    sys.path.insert(0, str(ROOT))
    from pipeline.encoding import teacher_matrix
    from pipeline.evergreen_edge import EdgeModel
    from pipeline.registry import Registry
    from pipeline.release import macro_f1
    from pipeline.teacher import Teacher

    version = Registry(data_dir / "registry").get("production")
    package = data_dir / "packages" / f"evergreen-{version.version}.zip"
    public_key = data_dir / "secrets" / "signing_key.pub.pem"
    teacher = Teacher.load(version.directory)
    training_set = pl.read_parquet(data_dir / "assets" / "training_set" / f"{version.entry['lineage']['partition']}.parquet")
    test = training_set.filter(pl.col("split") == "test")
    labels, classes = test["label"].to_numpy(), tuple(version.entry["classes"])
    x_teacher = teacher_matrix(test, teacher.preprocessing)
    booster = teacher.booster  # one thread per predict call (reset_parameter crashes on a loaded model)
    figures = {"test_rows": test.height, "package_bytes": package.stat().st_size, "version": version.version,
               "metrics": version.entry["metrics"], "precisions": {}}
    shipped = EdgeModel(package, public_key)
    columns = {name: test[name].to_list() for name in shipped.feature_order}
    for precision in shipped.manifest["models"]["precisions"]:  # fp32 alone when int8 failed its gate
        model = EdgeModel(package, public_key, precision=precision, threads=1)
        model_file = version.file(model.manifest["models"]["precisions"][precision]["file"])
        figures["precisions"][precision] = {
            **edge_latency.measure(package, public_key, precision, columns), "model_bytes": model_file.stat().st_size,
            "macro_f1": macro_f1(labels, np.asarray(model.predict(columns)), classes),
        }
    one = x_teacher[:1]
    for _ in range(200):
        booster.predict(one, num_threads=1)
    big = np.resize(x_teacher, (edge_latency.BATCH_ROWS, x_teacher.shape[1]))
    lgb_batch = edge_latency.rows_per_second(lambda rows: booster.predict(rows, num_threads=1), big)
    figures["lightgbm"] = {
        "single_row_us": _median_us(lambda: booster.predict(one, num_threads=1), SINGLE_ROW_CALLS),
        "batch_rows_per_s": lgb_batch,
        "macro_f1": macro_f1(labels, np.asarray(classes)[booster.predict(x_teacher, num_threads=1).argmax(1)], classes),
    }
    return figures


def _us(m: tuple[float, float, float]) -> str:
    return f"{m[0]:.1f} µs (round medians {m[1]:.1f}–{m[2]:.1f})"


def report(run: dict, inf: dict) -> str:
    m = inf["metrics"]
    lines = [
        f"## {dt.date.today().isoformat()}: embedded default (`make bench`)",
        f"Machine: {machine()}. Command: `make bench` (= `python -m benchmarks.run_all`), fresh data dir.",
        "",
        "| figure | value |", "|---|---|",
        f"| `make run` main work (14 days, after set-up): wall time | {run['wall_s']:.1f} s |",
        f"| same: peak resident memory | {run['peak_rss_mib']:.0f} MiB |",
    ]
    for name in ("teacher", "student"):
        nd = m[name]["newest_day"]
        lines.append(f"| {name}: newest test day accuracy / macro-F1 | {nd['accuracy']:.3f} / {nd['macro_f1']:.3f} ({nd['rows']} rows) |")
        lines.append(f"| {name}: whole test split accuracy / macro-F1 | {m[name]['accuracy']:.3f} / {m[name]['macro_f1']:.3f} |")
    lines.append(f"| edge package size (its models + runtime + signed manifest) | {inf['package_bytes']:,} bytes |")
    for precision, f in inf["precisions"].items():
        lines += [
            f"| student {precision}: file size / macro-F1 on the test rows ({inf['test_rows']}) | {f['model_bytes']:,} bytes / {f['macro_f1']:.4f} |",
            f"| student {precision}: single raw row through the edge runtime (`predict_row`), 1 thread, median of {edge_latency.SINGLE_ROW_CALLS:,} in {edge_latency.ROUNDS} rounds | {_us(f['single'])} |",
            f"| student {precision}: batch throughput, 1 thread ({edge_latency.BATCH_ROWS:,} rows): raw rows / encoded rows (model only) | {f['batch']:,.0f} / {f['batch_model']:,.0f} rows/s |",
        ]
    lgb = inf["lightgbm"]
    lines += [
        f"| teacher LightGBM: macro-F1 on the same rows | {lgb['macro_f1']:.4f} |",
        f"| teacher LightGBM predict, single row, 1 thread | {_us(lgb['single_row_us'])} |",
        f"| teacher LightGBM batch throughput, 1 thread | {lgb['batch_rows_per_s']:,.0f} rows/s |",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="append the figures to benchmarks/RESULTS.md")
    parser.add_argument("--skip-feedback", action="store_true", help="skip the 60-day replay (about half an hour)")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="evergreen-bench-"))
    run = run_main(data_dir)
    text = report(run, inference(data_dir))
    print(text)
    if not args.skip_feedback:
        text += "\n" + feedback.run(data_dir / "replay")
    if args.record:
        record(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
