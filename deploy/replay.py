"""``make demo``: replay simulated days through the real assets and sensors, with a firmware roll-out.

The dataset is the default one with its partitions moved so that the roll-out falls on day
``--rollout-day`` of the replay. A warm-up (``--warmup`` days, then ``main_job`` on the last one)
trains the first production model, as ``make run`` does. Then, for each replayed day, in order:

1. ``ingest_job`` runs for the day (what the landing sensor or a schedule does in production): the
   data layer, the drift report against the production model and the retraining policy;
2. the model that was in production when the day began is scored on all of the day's rows against
   the simulator's truth (the one number no deployed system has: what the replay is for);
3. the real ``canary_sensor`` and ``drift_sensor`` are ticked, as the daemon would, and a run they
   request is executed with the request's run key, tags and config, so their idempotence is their
   own. A retrain's model first serves a fraction of the sites (the gray release); the canary
   sensor rolls it out to all of them, or back, when its window ends.

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


def write_dataset(out: Path, rollout_day: int, warmup: int, devices_per_site: int | None,
                  canary_min_labels: int | None) -> tuple[Path, dt.date]:
    """The default dataset YAML with its partitions starting ``warmup + rollout_day`` days before the roll-out."""
    raw = yaml.safe_load((ROOT / "config" / "broadband.yaml").read_text())
    rollout = dt.date.fromisoformat(str(raw["simulator"]["drift"]["firmware_rollout"]["date"]))
    first = rollout - dt.timedelta(days=rollout_day + warmup)
    raw["partitions"]["start_date"] = first.isoformat()
    if devices_per_site:
        raw["simulator"]["devices_per_site"] = devices_per_site
    if canary_min_labels:
        raw["deployment"]["canary"]["min_labels"] = canary_min_labels
    path = out / "replay.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--rollout-day", type=int, default=30, help="the replay day (0-based) of the firmware roll-out")
    parser.add_argument("--warmup", type=int, default=7)
    parser.add_argument("--devices-per-site", type=int, help="a smaller fleet for a quick replay")
    parser.add_argument("--canary-min-labels", type=int, help="labels each arm of a gray release needs (a smaller "
                        "fleet returns fewer); default: the dataset's")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "replay")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} is not empty: the replay starts from nothing (remove it or pass another --out)")
    out.mkdir(parents=True, exist_ok=True)
    dataset_path, first = write_dataset(out, args.rollout_day, args.warmup, args.devices_per_site, args.canary_min_labels)
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
    ingest, retrain, main_job, conclude = (defs.resolve_job_def(n) for n in
                                           ("ingest_job", "retrain_job", "main_job", "conclude_canary_job"))
    warm = [first + dt.timedelta(days=i) for i in range(warmup)]
    for i, day in enumerate(warm):
        _execute(main_job if i == len(warm) - 1 else ingest, day, instance, f"warm-up {i + 1}/{warmup}")
    timeline, cursors = [], {}
    for i in range(days):
        day = first + dt.timedelta(days=warmup + i)
        serving = _Serving(defs)
        result = _execute(ingest, day, instance, f"day {i + 1}/{days}")
        accuracy = replay.true_accuracy(serving.config, day, _features(day), serving.predict, serving.hash_key)
        report, decision = _metadata(result, "drift_report"), _metadata(result, "retraining_policy")
        record = replay.ReplayDay(
            day, serving.version, accuracy, bool(report.get("data_drift")), bool(report.get("prediction_drift")),
            bool(report.get("concept_drift")), float(decision["severity"]), decision["action"], decision["reason"],
        )
        canary_tick = _tick(defs, instance, "canary_sensor", cursors)
        record.release = canary_tick.skip_message or ""
        for request in canary_tick.run_requests or []:
            outcome = _execute_request(conclude, request, instance).output_for_node("conclude_canary")
            record.release = f"rolled {'out' if outcome['roll_out'] else 'back'} {outcome['version']}"
        drift_tick = _tick(defs, instance, "drift_sensor", cursors)
        record.sensor = drift_tick.skip_message or ""
        for request in drift_tick.run_requests or []:
            run_result = _execute(retrain, day, instance, f"retrain ({decision['action']})",
                                  tags={**request.tags, "dagster/run_key": request.run_key})
            record.retrain_run = run_result.run_id
            released = _metadata(run_result, "production_model")
            if released["released_to"] == "canary":
                record.release = f"started canary on {released['canary_sites']}"
        timeline.append(record)
        print(f"  {day}  serving {serving.version}  accuracy {accuracy:.3f}  alarm {record.alarm}  {decision['action']}"
              f"{'  -> RETRAIN ' + record.retrain_run[:8] if record.retrain_run else ''}  {record.release}", flush=True)
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


def _execute_request(job, request, instance):
    """A sensor's request for an unpartitioned job, with its config, run key and tags."""
    run_config = {**request.run_config, **QUIET}
    result = job.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False,
                                    tags={**request.tags, "dagster/run_key": request.run_key})
    if not result.success:
        raise SystemExit(f"{job.name} failed (run {result.run_id}): open the instance in {os.environ['DAGSTER_HOME']}")
    return result


def _tick(defs, instance, name: str, cursors: dict[str, str | None]):
    """One evaluation of a real sensor, with its cursor carried over as the daemon does."""
    import dagster as dg

    context = dg.build_sensor_context(instance=instance, cursor=cursors.get(name), definitions=defs, resources=defs.resources)
    result = defs.resolve_sensor_def(name).evaluate_tick(context)
    cursors[name] = result.cursor or cursors.get(name)
    return result


def _features(day: dt.date):
    import polars as pl

    return pl.read_parquet(Path(os.environ["EVERGREEN_DATA_DIR"]) / "assets" / "features" / f"{day.isoformat()}.parquet")


class _Serving:
    """The students as the devices run them when the day begins: production, and on the sites of a
    gray release the new version (the registry's files), for scoring the day."""

    def __init__(self, defs):
        from pipeline.registry import PRODUCTION
        from pipeline.release import predictor

        storage, dataset = defs.resources["storage"], defs.resources["dataset"]
        registry = storage.registry
        production, canary = registry.get(PRODUCTION), registry.canary()
        self.version = production.version + (f" + {canary.version} on {', '.join(canary.sites)}" if canary else "")
        self.config, self.hash_key = dataset.load(), storage.hash_key()
        self._production = predictor(production)
        self._canary = (canary.sites, predictor(registry.get(canary.version))) if canary else None

    def predict(self, rows):
        import numpy as np

        from pipeline.dataset import SITE

        predicted = self._production(rows)
        if self._canary is not None:
            sites, model = self._canary
            on_canary = rows[SITE].is_in(list(sites)).to_numpy()
            predicted = np.where(on_canary, model(rows), predicted) if on_canary.any() else predicted
        return list(predicted)


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
