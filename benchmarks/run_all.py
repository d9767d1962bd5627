"""Benchmarks for the embedded default, recorded in benchmarks/RESULTS.md (``make bench``).

1. ``make run``'s main work (``python -m deploy.run_main --days 14``) in a fresh DAGSTER_HOME and
   data directory: wall time and peak resident memory (the launcher process and its children).
2. Teacher and student accuracy / macro-F1 on the newest test day, from that run's registry entry.
3. Inference on that run's held-out test rows, one thread: the student through ONNX Runtime (single
   row: median of 10,000 calls; batch: rows per second) against LightGBM's own predict.
4. The feedback loop: the 60-day replay, teacher updates, drift test cost (``benchmarks/feedback.py``).
"""

import argparse
import datetime as dt
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks import feedback

ROOT = Path(__file__).resolve().parent.parent
SINGLE_ROW_CALLS = 10_000
BATCH_ROWS = 100_000


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
    sys.path.insert(0, str(ROOT))
    from deploy.edge.evergreen_edge import EdgeModel
    from pipeline.edge_package import unpack
    from pipeline.encoding import student_matrix, teacher_matrix
    from pipeline.registry import Registry
    from pipeline.teacher import Teacher

    version = Registry(data_dir / "registry").get("candidate")
    package = data_dir / "packages" / f"evergreen-{version.version}.zip"
    model = EdgeModel(unpack(package, Path(tempfile.mkdtemp()) / "pkg"), threads=1)
    teacher = Teacher.load(version.directory)
    training_set = pl.read_parquet(data_dir / "assets" / "training_set" / f"{version.entry['lineage']['partition']}.parquet")
    test = training_set.filter(pl.col("split") == "test")
    x_student = student_matrix(test, teacher.preprocessing)
    x_teacher = teacher_matrix(test, teacher.preprocessing)
    booster = teacher.booster  # one thread per predict call (reset_parameter crashes on a loaded model)
    agree = float((model.predict_proba_encoded(x_student).argmax(1) == booster.predict(x_teacher, num_threads=1).argmax(1)).mean())

    one_s, one_t = x_student[:1], x_teacher[:1]
    for _ in range(200):  # warm-up
        model.predict_proba_encoded(one_s)
        booster.predict(one_t, num_threads=1)
    onnx_single = _median_us(lambda: model.predict_proba_encoded(one_s), SINGLE_ROW_CALLS)
    lgb_single = _median_us(lambda: booster.predict(one_t, num_threads=1), SINGLE_ROW_CALLS)
    columns = {name: test[name].to_numpy() for name in model.feature_order}
    row = {k: v[:1] for k, v in columns.items()}
    edge_single = _median_us(lambda: model.predict_proba(row), SINGLE_ROW_CALLS)

    reps = -(-BATCH_ROWS // len(x_student))
    big_s, big_t = np.tile(x_student, (reps, 1))[:BATCH_ROWS], np.tile(x_teacher, (reps, 1))[:BATCH_ROWS]
    t = time.perf_counter(); model.predict_proba_encoded(big_s); onnx_batch = BATCH_ROWS / (time.perf_counter() - t)
    t = time.perf_counter(); booster.predict(big_t, num_threads=1); lgb_batch = BATCH_ROWS / (time.perf_counter() - t)
    return {
        "test_rows": test.height, "student_teacher_agreement": agree, "onnx_bytes": (version.directory / "student.onnx").stat().st_size,
        "package_bytes": package.stat().st_size,
        "single_row_us": {"student_onnx": onnx_single, "student_onnx_with_encoding": edge_single, "teacher_lightgbm": lgb_single},
        "batch_rows_per_s": {"student_onnx": onnx_batch, "teacher_lightgbm": lgb_batch},
        "metrics": version.entry["metrics"], "version": version.version,
    }


def _us(m: tuple[float, float, float]) -> str:
    return f"{m[0]:.1f} µs (round medians {m[1]:.1f}–{m[2]:.1f})"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, {platform.platform()}"


def record(text: str) -> None:
    with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as fh:
        fh.write("\n" + text)


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
    s, b = inf["single_row_us"], inf["batch_rows_per_s"]
    lines += [
        f"| student ONNX fp32, single row, 1 thread (median of {SINGLE_ROW_CALLS:,} calls in 5 rounds) | {_us(s['student_onnx'])} |",
        f"| same, through the edge runtime incl. encoding of raw features | {_us(s['student_onnx_with_encoding'])} |",
        f"| teacher LightGBM predict, single row, 1 thread | {_us(s['teacher_lightgbm'])} |",
        f"| student ONNX batch throughput, 1 thread ({BATCH_ROWS:,} rows) | {b['student_onnx']:,.0f} rows/s |",
        f"| teacher LightGBM batch throughput, 1 thread | {b['teacher_lightgbm']:,.0f} rows/s |",
        f"| student/teacher agreement on the test rows | {inf['student_teacher_agreement']:.3f} ({inf['test_rows']} rows) |",
        f"| student.onnx / edge package size | {inf['onnx_bytes']:,} / {inf['package_bytes']:,} bytes |",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="append the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="evergreen-bench-"))
    run = run_main(data_dir)
    text = report(run, inference(data_dir))
    print(text)
    text += "\n" + feedback.run(data_dir / "replay")
    if args.record:
        record(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
