"""``make demo``: replay simulated days through the real assets and sensors, with a firmware roll-out.

The dataset is the default one with its partitions moved so that the roll-out falls on day
``--rollout-day`` of the replay. A warm-up (``--warmup`` days, then ``main_job`` on the last one)
trains the first production model, as ``make run`` does. Then, for each replayed day, in order:

1. ``ingest_job`` runs for the day (what the landing sensor or a schedule does in production): the
   data layer, the drift report against the production model and the retraining policy;
2. the model that was in production when the day began is scored on all of the day's rows against
   the simulator's truth (the one number no deployed system has: what the replay is for);
3. the real ``drift_sensor`` is ticked, as the daemon would, and a run it requests is executed
   with the request's run key and tags, so its idempotence is the sensor's own.

Output in ``--out``: ``timeline.csv``, ``summary.json`` and ``accuracy.png`` (alarms and retrains
marked). Everything runs on a fresh Dagster instance in ``--out``, which the UI can open afterwards.
"""

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def write_dataset(out: Path, rollout_day: int, warmup: int, devices_per_site: int | None) -> tuple[Path, dt.date]:
    """The default dataset YAML with its partitions starting ``warmup + rollout_day`` days before the roll-out."""
    raw = yaml.safe_load((ROOT / "config" / "broadband.yaml").read_text())
    rollout = dt.date.fromisoformat(str(raw["simulator"]["drift"]["firmware_rollout"]["date"]))
    first = rollout - dt.timedelta(days=rollout_day + warmup)
    raw["partitions"]["start_date"] = first.isoformat()
    if devices_per_site:
        raw["simulator"]["devices_per_site"] = devices_per_site
    path = out / "replay.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--rollout-day", type=int, default=30, help="the replay day (0-based) of the firmware roll-out")
    parser.add_argument("--warmup", type=int, default=7)
    parser.add_argument("--devices-per-site", type=int, help="a smaller fleet for a quick replay")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "replay")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} is not empty: the replay starts from nothing (remove it or pass another --out)")
    out.mkdir(parents=True, exist_ok=True)
    dataset_path, first = write_dataset(out, args.rollout_day, args.warmup, args.devices_per_site)
    os.environ.update({"EVERGREEN_DATASET": str(dataset_path), "EVERGREEN_DATA_DIR": str(out / "data"),
                       "DAGSTER_HOME": str(out / "dagster_home")})
    summary = run(out, first, args.warmup, args.days, args.rollout_day)
    print(json.dumps(summary, indent=2))
    return 0


def run(out: Path, first: dt.date, warmup: int, days: int, rollout_day: int) -> dict:
    """Warm up, replay, write the outputs; returns the summary. Needs the environment set first
    (the dataset's partitions are read when the definitions are imported)."""
    from deploy.home import home_from_env

    home_from_env()
    import dagster as dg

    from definitions import defs
    from pipeline import replay

    instance = dg.DagsterInstance.get()
    ingest, retrain, main_job = (defs.resolve_job_def(n) for n in ("ingest_job", "retrain_job", "main_job"))
    warm = [first + dt.timedelta(days=i) for i in range(warmup)]
    for i, day in enumerate(warm):
        _execute(main_job if i == len(warm) - 1 else ingest, day, instance, f"warm-up {i + 1}/{warmup}")
    timeline, cursor = [], None
    for i in range(days):
        day = first + dt.timedelta(days=warmup + i)
        serving = _Serving(defs)
        result = _execute(ingest, day, instance, f"day {i + 1}/{days}")
        accuracy = replay.true_accuracy(serving.config, day, _features(day), serving.predict, serving.hash_key)
        report, decision = _metadata(result, "drift_report"), _metadata(result, "retraining_policy")
        sensor_result, cursor = _tick(defs, instance, cursor)
        record = replay.ReplayDay(
            day, serving.version, accuracy, bool(report.get("data_drift")), bool(report.get("prediction_drift")),
            bool(report.get("concept_drift")), float(decision["severity"]), decision["action"], decision["reason"],
            sensor=sensor_result.skip_message or "",
        )
        for request in sensor_result.run_requests or []:
            run_result = _execute(retrain, day, instance, f"retrain ({decision['action']})",
                                  tags={**request.tags, "dagster/run_key": request.run_key})
            record.retrain_run = run_result.run_id
        timeline.append(record)
        print(f"  {day}  serving {serving.version}  accuracy {accuracy:.3f}  alarm {record.alarm}  {decision['action']}"
              f"{'  -> RETRAIN ' + record.retrain_run[:8] if record.retrain_run else ''}", flush=True)
    return _write_outputs(out, timeline, first + dt.timedelta(days=warmup + rollout_day))


def _execute(job, day: dt.date, instance, label: str, tags: dict | None = None):
    started = time.perf_counter()
    result = job.execute_in_process(partition_key=day.isoformat(), instance=instance, run_config=QUIET, tags=tags or {},
                                    raise_on_error=False)
    print(f"[{label}] {job.name} {day}: {'ok' if result.success else 'FAILED'} in {time.perf_counter() - started:.1f}s", flush=True)
    if not result.success:
        raise SystemExit(f"{job.name} {day} failed (run {result.run_id}): open the instance in {os.environ['DAGSTER_HOME']}")
    return result


def _metadata(result, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _tick(defs, instance, cursor: str | None):
    """One evaluation of the real drift sensor, with its cursor carried over as the daemon does."""
    import dagster as dg

    sensor = defs.resolve_sensor_def("drift_sensor")
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources)
    result = sensor.evaluate_tick(context)
    return result, result.cursor or cursor


def _features(day: dt.date):
    import polars as pl

    return pl.read_parquet(Path(os.environ["EVERGREEN_DATA_DIR"]) / "assets" / "features" / f"{day.isoformat()}.parquet")


class _Serving:
    """The production student as the devices run it (the registry's files), for scoring a day."""

    def __init__(self, defs):
        from pipeline.encoding import student_matrix
        from pipeline.registry import PRODUCTION
        from pipeline.student import Student

        storage, dataset = defs.resources["storage"], defs.resources["dataset"]
        version = storage.registry.get(PRODUCTION)
        student, preprocessing = Student.load(version.directory), version.entry["preprocessing"]
        classes = version.entry["classes"]
        self.version, self.config, self.hash_key = version.version, dataset.load(), storage.hash_key()
        self.predict = lambda rows: [classes[i] for i in student.predict_proba(student_matrix(rows, preprocessing)).argmax(axis=1)]


def _write_outputs(out: Path, timeline: list, rollout: dt.date) -> dict:
    from pipeline import replay
    from assets.partitions import DATASET

    replay.timeline_frame(timeline).write_csv(out / "timeline.csv")
    summary = replay.summarise(timeline, rollout)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    events = {"firmware roll-out": rollout}
    if (model := DATASET.simulator.drift.new_device_model) is not None:
        events[f"new model {model.name}"] = model.date
    (out / "accuracy.png").write_bytes(replay.plot(timeline, events))
    return summary


if __name__ == "__main__":
    sys.exit(main())
