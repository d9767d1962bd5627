"""Peak memory and speed of ingesting one big landing day (``python -m benchmarks.ingest_memory``).

Generates a CSV of about ``--mb`` MB (hourly readings of a large fleet, all valid, in the default
dataset's columns) in a temporary landing folder, then materializes ``raw_telemetry``, then
``clean_telemetry`` + ``quarantine``, for its day with the definitions' resources (Parquet IO
manager, Great Expectations checks) on one persistent instance. Each step runs in a fresh
subprocess whose peak resident memory (``ru_maxrss``) is its own, as the multiprocess executor runs
each step in its own process; the day's peak is the larger of the two. ``--repo`` runs another
checkout's code on the same file (a "before" figure from ``git worktree add /tmp/before <commit>``).
Rows per second count the file's rows over the two steps' wall time (imports excluded).
"""

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.results import machine

ROOT = Path(__file__).resolve().parent.parent
DAY = dt.date(2026, 10, 13)
BYTES_PER_ROW = 104
"""About what one generated row takes as CSV text, to size the fleet for ``--mb``."""


def generate(path: Path, megabytes: float, seed: int = 5) -> int:
    """A day of hourly readings for ``megabytes * 1e6 / BYTES_PER_ROW / 24`` devices; returns rows."""
    rng = np.random.default_rng(seed)
    devices = max(int(megabytes * 1e6 / BYTES_PER_ROW / 24), 1)
    n = devices * 24
    device = np.repeat(np.arange(devices), 24)
    start = dt.datetime.combine(DAY, dt.time(), dt.timezone.utc)
    frame = pl.DataFrame({
        "ts": [start] * n,
        "device_id": pl.Series(device).cast(pl.String),
        "site": pl.Series(np.array(["north", "south", "east", "west"])[device % 4]),
        "rx_power_dbm": rng.normal(-20, 3, n).round(2), "tx_power_dbm": rng.normal(2, 1, n).round(2),
        "temperature_c": rng.normal(45, 8, n).round(1), "uptime_h": rng.integers(0, 5000, n),
        "crc_errors": rng.poisson(3, n), "packet_loss_pct": rng.uniform(0, 2, n).round(3),
        "latency_ms": rng.gamma(2, 8, n).round(1), "jitter_ms": rng.gamma(2, 1, n).round(2),
        "throughput_mbps": rng.uniform(50, 900, n).round(1), "reboots_24h": rng.poisson(0.2, n),
        "line_length_m": rng.uniform(100, 8000, n).round(1),
        "device_model": pl.Series(np.array(["HG8145", "F670L", "ZXHN", "AX3000"])[device % 4]),
        "firmware_version": pl.Series(np.array(["3.0.9", "3.1.4"])[device % 2]),
    }).with_columns(
        (pl.col("ts") + pl.duration(hours=pl.int_range(0, pl.len()) % 24, minutes=pl.col("uptime_h") % 60)).alias("ts"),
        ("CPE-" + pl.col("device_id").str.zfill(7)).alias("device_id"),
    )
    frame.with_columns(pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S")).write_csv(path)
    return n


def dataset_yaml(folder: Path, landing: Path) -> Path:
    path = folder / "dataset.yaml"
    path.write_text(f"extends: {ROOT / 'config' / 'broadband.yaml'}\n"
                    f"source: {{kind: landing, landing_dir: {landing}}}\n")
    return path


STEPS = ("raw_telemetry", "clean_telemetry")


def run_case(step: str, data_dir: str) -> dict:
    """In the child: materialize one step of the day; its wall time and this process's peak RSS."""
    import dagster as dg

    import definitions
    from assets.data import clean_telemetry, raw_telemetry

    resources = definitions.build_resources(data_dir, os.environ["EVERGREEN_DATASET"])
    started, cpu = time.perf_counter(), _cpu_seconds()
    with dg.DagsterInstance.get() as instance:
        selection = dg.AssetSelection.assets(step).required_multi_asset_neighbors()  # clean_telemetry + quarantine
        result = dg.materialize([raw_telemetry, clean_telemetry], selection=selection, partition_key=DAY.isoformat(),
                                resources=resources, instance=instance, raise_on_error=False)
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    rows = [e.materialization.metadata["rows"].value for e in result.get_asset_materialization_events()
            if e.asset_key.to_user_string() == step]
    return {"success": result.success, "seconds": seconds, "cpu_seconds": cpu, "rows_out": rows[0] if rows else None,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all threads): steadier than wall time on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(repo: Path, megabytes: float, work: Path) -> dict:
    landing = work / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    csv = landing / f"big_{DAY.isoformat()}.csv"
    rows = generate(csv, megabytes) if not csv.exists() else pl.scan_csv(csv).select(pl.len()).collect().item()
    data_dir = tempfile.mkdtemp(dir=work, prefix="data-")
    env = dict(os.environ, EVERGREEN_DATASET=str(dataset_yaml(work, landing)), PYTHONPATH=str(repo),
               EVERGREEN_HASH_KEY="benchmark-key", DAGSTER_DISABLE_TELEMETRY="1", DAGSTER_HOME=data_dir)
    figures = {"rows": rows, "file_mb": csv.stat().st_size / 1e6, "repo": str(repo), "load_avg_start": os.getloadavg()[0]}
    for step in STEPS:
        done = subprocess.run([sys.executable, "-m", "benchmarks.ingest_memory", "--case", step, data_dir], cwd=repo,
                              env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        figures[step] = json.loads(done.stdout.strip().splitlines()[-1])
    seconds = sum(figures[step]["seconds"] for step in STEPS)
    cpu = sum(figures[step]["cpu_seconds"] for step in STEPS)
    return {**figures, "seconds": seconds, "rows_per_s": rows / seconds, "rows_per_cpu_s": rows / cpu,
            "peak_rss_mib": max(figures[step]["peak_rss_mib"] for step in STEPS), "load_avg_end": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=200)
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose code ingests (default: this one)")
    parser.add_argument("--work", type=Path, help="keep the generated file here (reused when present)")
    parser.add_argument("--case", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(*args.case)))
        return
    with tempfile.TemporaryDirectory(prefix="evergreen-ingest-") as tmp:
        work = args.work or Path(tmp)
        figures = measure(args.repo.resolve(), args.mb, work)
    print(json.dumps({**figures, "machine": machine()}))


if __name__ == "__main__":
    main()
