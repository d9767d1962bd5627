"""The backtest's day loop (``deploy.backtest``): imported once the environment names the staged
dataset, the data folder and the instance, because the definitions read the dataset when imported."""

import datetime as dt
import json
import os
import shutil
import time
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from definitions import defs
from deploy.backtest import QUIET, Options
from deploy.home import home_from_env
from pipeline import atomic, backtest as bt, sources
from pipeline.dataset import LABEL, ROW_ID, SITE, DatasetConfig
from pipeline.progress import Progress, duration
from pipeline.registry import PRODUCTION
from pipeline.release import predictor


class Backtest:
    def __init__(self, options: Options, user: DatasetConfig):
        home_from_env()
        self.options, self.user = options, user
        self.instance = dg.DagsterInstance.get()
        self.storage, self.config = defs.resources["storage"], defs.resources["dataset"].load()
        self.data_dir = Path(self.storage.data_dir)
        self.cursors: dict[str, str | None] = {}
        self.history = bt.LabelledHistory(self.config)
        self.baseline_names = [bt.STATIC, bt.DAILY_RETRAIN, *(f"retrain_{w}d" for w in options.retrain_windows), bt.NO_CHANGE]
        self.windows = {bt.DAILY_RETRAIN: self.config.partitions.window_days,
                        **{f"retrain_{w}d": w for w in options.retrain_windows}}
        self.models: dict[str, object] = {}
        self.staged: dict[dt.date, dict[str, Path]] = {}
        """Per day, each staged landing file and the user's file it is a copy of."""
        self.withheld: set[dt.date] = set()
        """Days whose files landed without their labels (under a label delay)."""
        self.files: dict[dt.date, list[sources.LandingFile]] = {}
        """The user's landing files, by day."""

    # -- the days of the history

    def days(self) -> list[dt.date]:
        """Every day of the history: the landed files' days, or the simulator's days up to yesterday."""
        if self.user.landing_dir is not None:
            for found in sources.list_landing_files(self.user.landing_dir):
                self.files.setdefault(found.day, []).append(found)
            days = sorted(self.files)
        else:
            first = self.config.partitions.start_date
            days = [first + dt.timedelta(days=i) for i in range((dt.date.today() - first).days)]
        if len(days) <= self.options.warmup:
            raise SystemExit(f"{self.options.dataset}: {len(days)} days of history, not more than --warmup {self.options.warmup}")
        replayed = days[self.options.warmup:]
        return days[: self.options.warmup] + replayed[: self.options.days or len(replayed)]

    def run(self) -> dict:
        days = self.days()
        warmup, replayed = days[: self.options.warmup], days[self.options.warmup:]
        started = time.perf_counter()
        self.warm_up(warmup)
        print(f"warm-up: {len(warmup)} days in {duration(time.perf_counter() - started)}; replaying {len(replayed)} days", flush=True)
        timeline = []
        progress = Progress(len(replayed))
        for day in replayed:
            record = self.replay_day(day)
            timeline.append(record)
            print(progress.done(f"{day} acc {record.accuracy:.3f} (daily retrain "
                                f"{record.baselines[bt.DAILY_RETRAIN]:.3f}, static {record.baselines[bt.STATIC]:.3f})  "
                                f"{record.action}{'  RETRAINED (' + record.retrain_trigger + ')' if record.retrained else ''}"
                                f"{'  ' + record.release if record.release else ''}"), flush=True)
        return self.write_outputs(timeline)

    def warm_up(self, days: list[dt.date]) -> None:
        progress = Progress(len(days))
        for i, day in enumerate(days):
            self.land(day, withhold_labels=False)
            job = "main_job" if i == len(days) - 1 else "ingest_job"
            self.execute(job, partition=day, label=f"warm-up {i + 1}/{len(days)}")
            self.learn(day)
            print(progress.done(f"warm-up {job} {day}: ok"), flush=True)
        if self.user.landing_dir is not None:
            # the warm-up ingested these files already: one tick remembers them (its requests are the
            # days just run), as the daemon would after `make run`
            self.tick("landing_sensor")
        self.models[bt.STATIC] = bt.fit_baseline(self.history.labelled(days), self.config)
        self.refit(days[-1])

    def replay_day(self, day: dt.date) -> bt.BacktestDay:
        started = time.perf_counter()
        serving = _Serving(self.storage)
        runs = self.ingest(day)
        rows = self.scored_rows(day)
        truth = rows[LABEL].to_numpy()
        accuracy, f1 = bt.score(truth, serving.predict(rows), self.config.classes)
        baselines = {name: bt.score(truth, self.baseline_predictions(name, rows), self.config.classes)[0]
                     for name in self.baseline_names}
        report, decision = self.newest_metadata("drift_report", day), self.newest_metadata("retraining_policy", day)
        record = bt.BacktestDay(
            day=day, rows=rows.height, accuracy=accuracy, macro_f1=f1, baselines=baselines,
            data_alarm=bool(report.get("data_drift")), concept_alarm=bool(report.get("concept_drift")),
            action=str(decision.get("action", "")), reason=str(decision.get("reason", "")), serving=serving.version, runs=runs,
            estimated_accuracy=float(report.get("estimated_accuracy", float("nan"))), top_cause=(report.get("top_causes") or [""])[0],
        )
        self.run_sensors(day, record)
        self.learn(day)
        self.refit(day)
        record.seconds = time.perf_counter() - started
        return record

    # -- landing and ingesting

    def land(self, day: dt.date, withhold_labels: bool) -> None:
        """Copy the day's files into the staged landing folder (labels withheld under a delay); the
        labels of ``label_delay`` days before come back today."""
        if self.user.landing_dir is None:
            return
        staged_root = Path(self.config.landing_dir)
        self.staged[day] = {}
        for found in self.files[day]:
            target = staged_root / found.path.relative_to(self.user.landing_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            if withhold_labels:
                bt.write_without_labels(found.path, target, self.user.columns.label, self.user.source.csv_separator)
            else:
                with atomic.atomic_path(target) as tmp:  # the sensor never sees half a file
                    shutil.copyfile(found.path, tmp)
            self.staged[day][str(target)] = found.path
        if withhold_labels:
            self.withheld.add(day)
            self.return_labels(day - dt.timedelta(days=self.options.label_delay), arriving=day)

    def return_labels(self, of_day: dt.date, arriving: dt.date) -> None:
        """The labels of ``of_day``'s readings come back today, through the label inbox (days that
        landed with their labels, the warm-up's, have theirs already)."""
        if of_day not in self.withheld:
            return
        truth = self.truth(of_day)
        if truth.height:
            name = f"{arriving.isoformat()}-labels-of-{of_day.isoformat()}.csv"  # the first date in a name is its day
            target = self.storage.label_inbox.returned_dir / arriving.isoformat() / name
            target.parent.mkdir(parents=True, exist_ok=True)
            truth.select(ROW_ID, LABEL).write_csv(target)

    def ingest(self, day: dt.date) -> list[str]:
        """The day lands and is ingested as production would: the landing sensor's run, or on the
        simulator ``ingest_job`` for the day."""
        if self.user.landing_dir is None:
            return [self.execute("ingest_job", partition=day, label=str(day)).run_id]
        self.land(day, withhold_labels=self.options.label_delay > 0)
        tick = self.tick("landing_sensor")
        runs = [self.execute_request("ingest_job", request).run_id for request in tick.run_requests or []]
        if not runs:
            raise SystemExit(f"{day}: the landing sensor requested no run for the day's files ({tick.skip_message})")
        return runs

    # -- scoring

    def asset(self, name: str, day: dt.date) -> pl.DataFrame:
        return pl.read_parquet(self.data_dir / "assets" / name / f"{day.isoformat()}.parquet")

    def truth(self, day: dt.date) -> pl.DataFrame:
        """``row_id`` and the true label of the day's clean rows."""
        if self.user.landing_dir is None:
            return bt.simulated_truth(self.config, day, self.storage.hash_key())
        return bt.landed_truth(self.asset("clean_telemetry", day), self.staged[day], self.user.source.csv_separator,
                               self.user.columns.label)

    def scored_rows(self, day: dt.date) -> pl.DataFrame:
        return bt.scored_rows(self.asset("features", day), self.truth(day), self.config.classes)

    def baseline_predictions(self, name: str, rows: pl.DataFrame) -> np.ndarray:
        if name == bt.NO_CHANGE:
            return bt.no_change(rows, self.history.last_label(), self.options.label_delay)
        fallback = self.history.last_label() or self.config.classes[0]
        return bt.baseline_predict(self.models.get(name), rows, fallback)

    def learn(self, day: dt.date) -> None:
        self.history.add_day(day, self.asset("features", day), self.asset("gold_labels", day))

    def refit(self, day: dt.date) -> None:
        """The nightly cron jobs: each window's model retrained on the labels arrived by tonight."""
        for name, window in self.windows.items():
            rows = self.history.labelled(self.history.window(day, window))
            self.models[name] = bt.fit_baseline(rows, self.config) or self.models.get(name)

    # -- sensors and runs

    def run_sensors(self, day: dt.date, record: bt.BacktestDay) -> None:
        """The canary, drift and label sensors, ticked in that order as the daemon would."""
        canary = self.tick("canary_sensor")
        for request in canary.run_requests or []:
            result = self.execute_request("conclude_canary_job", request)
            outcome = result.output_for_node("conclude_canary")
            record.add_release(f"rolled {'out' if outcome['roll_out'] else 'back'} {outcome['version']} ({outcome['reason']})")
            record.runs.append(result.run_id)
        sensor_notes = []
        for name in ("drift_sensor", "label_sensor"):
            tick = self.tick(name)
            if tick.skip_message:
                sensor_notes.append(f"{name}: {tick.skip_message}")
            for request in tick.run_requests or []:
                started = time.perf_counter()
                result = self.execute_request("retrain_job", request, may_fail=True)
                record.retrain_seconds += time.perf_counter() - started
                record.runs.append(result.run_id)
                record.retrained, record.retrain_run = True, result.run_id
                if not result.success:  # a gate that blocks a candidate fails its run: an outcome, not an error
                    record.add_release(f"retrain run failed: {_failures(result)}")
                    continue
                record.retrain_trigger = request.tags.get("evergreen/trigger", name)
                record.retrain_action = request.tags.get("evergreen/policy_action", record.action)
                released = _metadata(result, "production_model")
                if released.get("released_to") == "canary":
                    record.add_release(f"started canary on {released['canary_sites']}")
                elif released.get("released_to") == "all sites":
                    record.add_release(f"released {released.get('production', '')} to all sites")
                elif released:
                    record.add_release(f"not released: {released.get('reason', released.get('released_to'))}")
        record.sensor = " | ".join(sensor_notes)

    def tick(self, name: str):
        """One evaluation of a real sensor, its cursor carried over as the daemon does."""
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursors.get(name), definitions=defs,
                                          resources=defs.resources)
        result = defs.resolve_sensor_def(name).evaluate_tick(context)
        self.cursors[name] = result.cursor or self.cursors.get(name)
        return result

    def execute(self, job: str, partition: dt.date, label: str, tags: dict | None = None):
        result = defs.resolve_job_def(job).execute_in_process(
            partition_key=partition.isoformat(), instance=self.instance, run_config=QUIET, tags=tags or {}, raise_on_error=False)
        if not result.success:
            raise SystemExit(f"[{label}] {job} {partition} failed (run {result.run_id}): "
                             f"open the instance with DAGSTER_HOME={os.environ['DAGSTER_HOME']} dagster dev")
        return result

    def execute_request(self, job: str, request: dg.RunRequest, may_fail: bool = False):
        """A sensor's request, with its partition, config, run key and tags; a failed run ends the
        backtest unless it ``may_fail``."""
        run_config = {**(request.run_config or {}), **QUIET}
        result = defs.resolve_job_def(job).execute_in_process(
            partition_key=request.partition_key, instance=self.instance, run_config=run_config, raise_on_error=False,
            tags={**request.tags, "dagster/run_key": request.run_key})
        if not result.success and not may_fail:
            raise SystemExit(f"{job} ({request.run_key}) failed (run {result.run_id}): "
                             f"open the instance with DAGSTER_HOME={os.environ['DAGSTER_HOME']} dagster dev")
        return result

    def newest_metadata(self, asset: str, day: dt.date) -> dict:
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[day.isoformat()]), limit=1).records
        if not records:
            return {}
        return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}

    # -- results

    def write_outputs(self, timeline: list[bt.BacktestDay]) -> dict:
        out = self.options.out
        events = self.options.events or _simulator_events(self.config)
        bt.timeline_frame(timeline).write_csv(out / "timeline.csv")
        summary = bt.summarise(timeline, events, self.baseline_names)
        summary.update(dataset=str(self.options.dataset), warmup_days=self.options.warmup, label_delay_days=self.options.label_delay)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        title = f"Evergreen backtest: {self.config.name} (label delay {self.options.label_delay} d)"
        (out / "timeline.png").write_bytes(bt.plot(timeline, events, self.baseline_names, title))
        return summary


class _Serving:
    """The models as the devices run them when the day begins: production, and on the sites of a gray
    release the new version."""

    def __init__(self, storage):
        registry = storage.registry
        production, canary = registry.get(PRODUCTION), registry.canary()
        self.version = production.version + (f" + {canary.version} on {', '.join(canary.sites)}" if canary else "")
        self._production = predictor(production)
        self._canary = (canary.sites, predictor(registry.get(canary.version))) if canary else None

    def predict(self, rows: pl.DataFrame) -> np.ndarray:
        predicted = self._production(rows)
        if self._canary is not None and rows.height:
            sites, model = self._canary
            on_canary = rows[SITE].is_in(list(sites)).to_numpy()
            if on_canary.any():
                predicted = np.where(on_canary, model(rows), predicted)
        return np.asarray(predicted)


def _metadata(result, asset: str) -> dict:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in events[-1].materialization.metadata.items()} if events else {}


def _failures(result) -> str:
    """The failed blocking checks and steps of a run, in a few words (a failed warning blocks nothing)."""
    checks = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR]
    return ", ".join([*(f"check {c}" for c in checks), *(f"step {s}" for s in result.get_failed_step_keys())])


def _simulator_events(config: DatasetConfig) -> list[dt.date]:
    if config.source.kind != "simulator":
        return []
    drift = config.simulator.drift
    return [e.date for e in (drift.firmware_rollout, drift.new_device_model) if e is not None]
