"""Scaling, backfill and Dagster's overhead on the simulator (``python -m benchmarks.scale``).

1. Scaling: the simulator's fleet at 1x, 4x and 16x the default (``devices_per_site``, through a
   dataset YAML that ``extends:`` the default). For one partition: the data layer (``raw_telemetry``,
   ``clean_telemetry`` + ``quarantine``, ``features``, ``gold_labels``, materialized together) and
   the training step (``teacher_model`` alone: a full LightGBM retrain on the day's
   ``training_set``, which holds the ``window_days`` window), each after the days before it were
   set up. Wall time and peak resident memory of each.
2. History: the same two measurements at 1x with few or many days already materialized before the
   partition (6 = a training window's worth, against 30), to show memory follows the partition
   and its windows, not the history kept.
3. Backfill of 30 days of ``ingest_job``: one run per day, in order (a day's features read the days
   before it), through the definitions' multiprocess executor (``execute_job`` of the
   reconstructable job on a persistent instance: forkserver, a process per step), against the same
   runs in one process (``execute_in_process``, as ``make run`` does).
4. Dagster's overhead: the same steps for the same days (the data layer and weak labels each day;
   pseudo-labels, training set, teacher, student and evaluation on the newest) materialized through
   Dagster (``dagster.materialize``, one run per day, persistent instance, Parquet IO manager),
   against the ``pipeline/`` functions called in a plain loop that writes the same Parquet files.
   For context, ``make run``'s own pattern (``ingest_job`` per day, then ``main_job`` on the
   newest, which also runs label queue, drift, export, registry and packaging) on the same days.

Every measurement runs in a fresh subprocess (``--case``) on a temporary data directory and
DAGSTER_HOME, so its peak RSS (``ru_maxrss``) is its own; for runs with subprocesses the process
tree's RSS and PSS are sampled every 0.2 s. The 1-minute load average is recorded at the start and
end of each measurement: the machine is shared. ``--quick`` is a smoke run (1x/2x, 3 days).
"""

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.results import emit_report, machine

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_YAML = ROOT / "config" / "broadband.yaml"
FIRST = dt.date(2026, 8, 1)
"""Days from the first partition on: before the firmware roll-out (2026-10-15), a stationary world."""
FEW_HISTORY = 6
"""Days set up before a measured partition: with it, a full training window (window_days = 7)."""
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
HASH_KEY = "evergreen-benchmark"
RESULT = "RESULT "

DATA_ASSETS = ("raw_telemetry", "clean_telemetry", "features", "gold_labels")
TRAINING_INPUTS = ("weak_labels", "pseudo_labels", "training_set")
CORE_NEWEST = ("pseudo_labels", "training_set", "teacher_model", "student_model", "evaluation")


# --------------------------------------------------------------------------- measuring, in a case

def _proc_status(pid: int | str, field: str) -> int:
    """A kB field of /proc/<pid>/status (VmRSS, VmHWM), 0 when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (the forkserver and its step processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


class TreeSampler(threading.Thread):
    """Peak summed RSS and PSS of this process and its descendants, sampled (PSS splits the pages
    forked processes share, so it does not count the preloaded libraries once per step)."""

    def __init__(self, interval: float = 0.2):
        super().__init__(daemon=True)
        self.interval, self.stop = interval, threading.Event()
        self.peak_rss = self.peak_pss = self.max_processes = 0

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            pids = _tree(os.getpid())
            self.peak_rss = max(self.peak_rss, sum(_proc_status(p, "VmRSS") for p in pids))
            self.peak_pss = max(self.peak_pss, sum(_pss_kib(p) for p in pids))
            self.max_processes = max(self.max_processes, len(pids))

    def result(self) -> dict:
        self.stop.set()
        self.join()
        return {"tree_peak_rss_mib": self.peak_rss / 1024, "tree_peak_pss_mib": self.peak_pss / 1024,
                "tree_max_processes": self.max_processes}


def _mib(kib: int) -> float:
    return kib / 1024


def _metadata(result) -> dict:
    """Asset key -> its materialization's metadata values (a table as its rows), of a run's result."""
    from assets.metadata import plain

    return {event.materialization.asset_key.to_user_string(): {k: plain(v.value) for k, v in event.materialization.metadata.items()}
            for event in result.get_asset_materialization_events()}


def ingest_job_factory():
    """The project's ``ingest_job`` with its definitions (multiprocess executor), reconstructable."""
    from definitions import defs

    return defs.resolve_job_def("ingest_job")


def _assets(names) -> list:
    from definitions import ASSETS

    by_name = {}
    for asset in ASSETS:
        for key in asset.keys:
            by_name[key.to_user_string()] = asset
    return list({id(by_name[n]): by_name[n] for n in names}.values())


def _materialize(names, day: str, resources, instance):
    import dagster as dg

    from definitions import ASSETS

    result = dg.materialize(ASSETS, selection=_assets(names), partition_key=day, resources=resources, instance=instance,
                            run_config=QUIET, raise_on_error=False)
    if not result.success:
        raise SystemExit(f"materialize {list(names)} {day} failed: "
                         + "; ".join(str(e.event_specific_data.error.message) for e in result.all_events if e.is_step_failure))
    return result


def _warm_up() -> None:
    """Pay the one-off costs of a fresh process before the clock: Great Expectations is imported and
    its context built by the first validation (about 8 s here), matplotlib by the first plot."""
    from pipeline import evaluation, validation
    from pipeline.dataset import load_dataset_config
    from pipeline.sources import read_raw_day

    config = load_dataset_config(os.environ["EVERGREEN_DATASET"])
    tiny = config.model_copy(update={"simulator": config.simulator.model_copy(update={"devices_per_site": 1})})
    validation.validate(validation.expectation_frame(read_raw_day(tiny, FIRST), tiny), tiny)
    evaluation.learning_curve_png({"train": [1.0, 0.5]}, "epoch")
    from snorkel.labeling import LFAnalysis  # noqa: F401  (weak labels import snorkel when first used)
    from snorkel.labeling.model import LabelModel  # noqa: F401


def run_case(spec: dict) -> dict:
    """One measurement, in this (fresh) process; the environment names the data dir and dataset."""
    load_start = os.getloadavg()
    started = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    from deploy.home import prepare_home

    prepare_home(Path(os.environ["DAGSTER_HOME"]))
    import dagster as dg

    import definitions  # noqa: F401  (the imports a run needs, before the clock starts)
    from definitions import build_resources

    instance = dg.DagsterInstance.get()
    resources = build_resources(os.environ["EVERGREEN_DATA_DIR"], os.environ["EVERGREEN_DATASET"])
    if not spec["kind"].startswith("backfill"):  # a backfill pays them inside its clock, as a user does
        _warm_up()
    out = {"import_s": time.perf_counter() - started, "rss_after_import_mib": _mib(_proc_status("self", "VmHWM"))}
    # ``rss_after_import_mib``: the high-water mark of imports and warm-up, the floor of every peak below
    days = [dt.date.fromisoformat(d).isoformat() for d in spec["days"]]
    sampler = TreeSampler() if spec.get("sample_tree") else None
    if sampler:
        sampler.start()
    load_work = os.getloadavg()
    t0 = time.perf_counter()
    kind = spec["kind"]
    if kind == "setup":  # every day's data layer and weak labels, then the last day's training set
        for day in days:
            _materialize((*DATA_ASSETS, "weak_labels"), day, resources, instance)
        out["metadata"] = _metadata(_materialize(TRAINING_INPUTS[1:], days[-1], resources, instance))["training_set"]
    elif kind == "setup_ingest":  # ingest_job for the days before the last, in process (as ``make run``)
        from definitions import defs

        for day in days[:-1]:
            if not defs.resolve_job_def("ingest_job").execute_in_process(
                    partition_key=day, instance=instance, raise_on_error=False, run_config=QUIET).success:
                raise SystemExit(f"ingest_job {day} failed")
        for day in days[-1:]:
            _materialize((*DATA_ASSETS, "weak_labels"), day, resources, instance)
        out["metadata"] = _metadata(_materialize(TRAINING_INPUTS[1:], days[-1], resources, instance))["training_set"]
    elif kind == "data":
        result = _materialize(DATA_ASSETS, days[-1], resources, instance)
        meta = _metadata(result)
        out["metadata"] = {k: meta[k] for k in ("raw_telemetry", "features", "gold_labels")}
        out["steps"] = {s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(result.run_id)}
    elif kind == "train":
        out["metadata"] = _metadata(_materialize(("teacher_model",), days[-1], resources, instance))["teacher_model"]
    elif kind == "backfill_inprocess":
        from definitions import defs

        job, per_day = defs.resolve_job_def("ingest_job"), []
        for day in days:
            t = time.perf_counter()
            result = job.execute_in_process(partition_key=day, instance=instance, raise_on_error=False, run_config=QUIET)
            if not result.success:
                raise SystemExit(f"ingest_job {day} failed")
            per_day.append({"day": day, "s": time.perf_counter() - t, "rss_mib": _mib(_proc_status("self", "VmRSS"))})
        out["per_day"] = per_day
    elif kind == "backfill_multiprocess":
        from benchmarks.scale import ingest_job_factory as factory  # by module name, not __main__

        recon, per_day = dg.reconstructable(factory), []
        for day in days:
            t = time.perf_counter()
            result = dg.execute_job(recon, instance, run_config=QUIET, tags={"dagster/partition": day})
            if not result.success:
                raise SystemExit(f"ingest_job {day} (multiprocess) failed")
            per_day.append({"day": day, "s": time.perf_counter() - t})
        out["per_day"] = per_day
    elif kind == "dagster_core":
        for i, day in enumerate(days):
            names = (*DATA_ASSETS, "weak_labels", *(CORE_NEWEST if i == len(days) - 1 else ()))
            meta = _metadata(_materialize(names, day, resources, instance))
        out["metadata"] = _core_summary(meta["training_set"], meta["teacher_model"], meta["evaluation"])
    elif kind == "plain_core":
        out["metadata"] = plain_core(days)
    elif kind == "dagster_main":
        from definitions import defs

        for i, day in enumerate(days):
            job = defs.resolve_job_def("main_job" if i == len(days) - 1 else "ingest_job")
            if not job.execute_in_process(partition_key=day, instance=instance, raise_on_error=False, run_config=QUIET).success:
                raise SystemExit(f"{job.name} {day} failed")
    else:
        raise SystemExit(f"unknown case kind {kind}")
    out["wall_s"] = time.perf_counter() - t0
    out["load"] = [load_work[0], os.getloadavg()[0]]
    out["load_case_start"] = load_start[0]
    out["peak_rss_mib"] = _mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    out["children_peak_rss_mib"] = _mib(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    if sampler:
        out.update(sampler.result())
    return out


def _core_summary(training_set: dict, teacher: dict, evaluation: dict) -> dict:
    return {"training_rows": training_set["rows"], "train_rows": training_set.get("train_rows"),
            "trees": teacher["trees"], "teacher_macro_f1": evaluation["teacher_macro_f1"],
            "student_macro_f1": evaluation["student_macro_f1"]}


def plain_core(days: list[str]) -> dict:
    """The Dagster side's steps as plain calls of ``pipeline/`` functions, as the assets make them,
    writing the same Parquet files and artifacts; windows come from frames kept in memory."""
    import polars as pl

    from pipeline import (
        atomic,
        cleaning,
        evaluation as evaluation_lib,
        features as feature_lib,
        ids,
        labels,
        self_training,
        sources,
        training_set as training_lib,
        validation,
        weak_supervision,
    )
    from pipeline.dataset import load_dataset_config
    from pipeline.label_inbox import LabelInbox, oracle_answers
    from pipeline.policy import on_request
    from pipeline.student import fit_student
    from pipeline.teacher_update import update_teacher

    config = load_dataset_config(os.environ["EVERGREEN_DATASET"])
    root = Path(os.environ["EVERGREEN_DATA_DIR"])
    key = ids.load_or_create_key(ids.HASH_KEY_ENV, root / "secrets" / "hash_key")
    inbox = LabelInbox(root / "label_inbox")
    store: dict[str, dict[dt.date, pl.DataFrame]] = {}

    def keep(asset: str, day: dt.date, frame: pl.DataFrame) -> pl.DataFrame:
        with atomic.atomic_path(root / "assets" / asset / f"{day.isoformat()}.parquet") as tmp:
            frame.write_parquet(tmp)
        store.setdefault(asset, {})[day] = frame
        return frame

    def window(asset: str, day: dt.date, days_back: int) -> pl.DataFrame:
        frames = [store[asset][d] for d in (day - dt.timedelta(days=k) for k in range(days_back, -1, -1)) if d in store.get(asset, {})]
        return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()

    spec, training_days = config.labelling, config.partitions.window_days - 1
    for i, day in enumerate(dt.date.fromisoformat(d) for d in days):
        raw = keep("raw_telemetry", day, sources.read_raw_day(config, day))
        validation.validate(validation.expectation_frame(raw, config), config)
        cleaned = cleaning.clean_day(raw, config, day, key)
        keep("quarantine", day, cleaned.quarantine)
        clean = keep("clean_telemetry", day, cleaned.clean)
        history = window("clean_telemetry", day - dt.timedelta(days=1), config.partitions.history_days - 1)
        features = keep("features", day, feature_lib.build_features(clean, history, config))
        oracle_answers(inbox, config, day, key)
        answers = inbox.read_answers(day, config.classes)
        inbox.write_rejects(day, answers.rejects)
        keep("gold_labels", day, labels.gold_labels(clean, config, day, key, answers.labels))
        gold_window = window("gold_labels", day, training_days)
        weak = weak_supervision.weak_labels(features, config, weak_supervision.class_balance(gold_window, config.classes),
                                            seed=config.training.seed)
        keep("weak_labels", day, weak.labels)
        if i < len(days) - 1:
            continue
        feature_window = window("features", day, training_days)
        pseudo = self_training.self_train(training_lib.split_gold(feature_window, gold_window, config), config, None)
        keep("pseudo_labels", day, pseudo.labels)
        frame = keep("training_set", day, training_lib.build_training_set(feature_window, gold_window, config, [
            training_lib.LabelSource(pseudo.labels, training_lib.PSEUDO, spec.self_training.weight),
            training_lib.LabelSource(window("weak_labels", day, training_days), training_lib.WEAK, spec.weak.weight,
                                     spec.weak.class_quota),
        ]))
        update = update_teacher(frame, None, None, on_request(day), config)
        artifacts = root / "artifacts"
        with atomic.atomic_dir(artifacts / "teacher_model" / day.isoformat()) as tmp:
            update.save(tmp)
        student = fit_student(frame, update.teacher, config, config.training.student)
        with atomic.atomic_dir(artifacts / "student_model" / day.isoformat()) as tmp:
            student.save(tmp)
        evaluation_lib.learning_curve_png({"train": [h["train_loss"] for h in student.history],
                                           "validation": [h["validation_loss"] for h in student.history]}, "epoch")
        report = evaluation_lib.evaluate_models(frame, update.teacher, student, config)
        atomic.write_text(artifacts / "evaluation" / day.isoformat() / "evaluation.json", json.dumps(report, indent=2))
        evaluation_lib.confusion_png({m: report[m]["confusion_matrix"] for m in ("teacher", "student")}, config.classes)
        counts = training_lib.split_counts(frame)
        return {"training_rows": frame.height, "train_rows": counts.get("train"), "trees": update.teacher.booster.num_trees(),
                "teacher_macro_f1": report["teacher"]["macro_f1"], "student_macro_f1": report["student"]["macro_f1"]}
    return {}


# --------------------------------------------------------------------------- the driver

def _days(first: dt.date, n: int) -> list[str]:
    return [(first + dt.timedelta(days=i)).isoformat() for i in range(n)]


def dataset_yaml(work: Path, scale: int) -> Path:
    """The default dataset with ``scale`` times its devices per site (and so rows per day)."""
    if scale == 1:
        return DEFAULT_YAML
    import yaml

    devices = yaml.safe_load(DEFAULT_YAML.read_text())["simulator"]["devices_per_site"] * scale
    path = work / f"dataset-{scale}x.yaml"
    path.write_text(f"# {scale}x the default fleet\nextends: {DEFAULT_YAML}\nsimulator:\n  devices_per_site: {devices}\n")
    return path


class Driver:
    def __init__(self, work: Path, keep: bool):
        self.work, self.keep, self.log = work, keep, []

    def case(self, label: str, kind: str, directory: str, days: list[str], scale: int = 1, sample_tree: bool = False) -> dict:
        home = self.work / directory
        env = dict(os.environ, EVERGREEN_DATA_DIR=str(home / "data"), DAGSTER_HOME=str(home / "dagster_home"),
                   EVERGREEN_DATASET=str(dataset_yaml(self.work, scale)), EVERGREEN_HASH_KEY=HASH_KEY,
                   DAGSTER_DISABLE_TELEMETRY="1", PYTHONPATH=str(ROOT))
        spec = json.dumps({"kind": kind, "days": days, "sample_tree": sample_tree})
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--case", spec], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
        if done.returncode or not lines:
            sys.exit(f"case {label} ({kind}) failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
        out = {"label": label, "kind": kind, "scale": scale, "days": len(days), **json.loads(lines[-1][len(RESULT):]),
               "process_s": time.perf_counter() - started}
        self.log.append(out)
        print(f"  {label}: {kind} {out['wall_s']:.1f} s, peak RSS {out['peak_rss_mib']:.0f} MiB, "
              f"load {out['load'][0]:.2f}->{out['load'][1]:.2f}", flush=True)
        return out

    def partition(self, directory: str, scale: int, history: int, setup: str = "setup", set_up_days: int | None = None,
                  keep: bool = False) -> dict:
        """Set up ``history`` days and the partition after them (its data layer, weak labels and
        training set), then measure that partition's data layer (materialized again, in a fresh
        process) and its teacher. ``set_up_days``: only the newest of those days still need setting
        up (the others are already in ``directory``)."""
        days = _days(FIRST, history + 1)
        prepared = self.case(f"{scale}x set-up ({history} days + 1)", setup, directory, days[-(set_up_days or len(days)):], scale)
        data = self.case(f"{scale}x data layer {days[-1]}", "data", directory, days, scale)
        teacher = self.case(f"{scale}x teacher {days[-1]}", "train", directory, days, scale)
        if not (self.keep or keep):
            shutil.rmtree(self.work / directory, ignore_errors=True)
        return {"scale": scale, "history": history, "day": days[-1], "setup": prepared, "data": data,
                "training_set": prepared, "teacher": teacher}


def run(quick: bool, keep: bool, work: Path) -> dict:
    scales = (1, 2) if quick else (1, 4, 16)
    backfill_days, core_days = (3, 3) if quick else (30, 7)
    d = Driver(work, keep)
    figures: dict = {"quick": quick, "load_start": os.getloadavg()}
    started = time.perf_counter()
    print("scaling:", flush=True)
    figures["scaling"] = [d.partition(f"scale-{s}x", s, FEW_HISTORY) for s in scales]
    print("backfill:", flush=True)
    days = _days(FIRST, backfill_days)
    figures["backfill"] = [d.case("backfill in-process", "backfill_inprocess", "backfill-inprocess", days, sample_tree=True),
                           d.case("backfill multiprocess", "backfill_multiprocess", "backfill-multiprocess", days, sample_tree=True)]
    print("history:", flush=True)  # ingest_job set-ups on both sides: few days, and the in-process backfill's
    figures["history"] = [d.partition("history-few", 1, FEW_HISTORY, setup="setup_ingest"),
                          d.partition("backfill-inprocess", 1, backfill_days, set_up_days=1)]
    print("overhead:", flush=True)
    days = _days(FIRST, core_days)
    figures["overhead"] = [d.case("dagster", "dagster_core", "core-dagster", days),
                           d.case("plain", "plain_core", "core-plain", days)]
    if not quick:
        figures["overhead"].append(d.case("make run pattern", "dagster_main", "core-main", days))
    figures["wall_s"] = time.perf_counter() - started
    figures["load_end"] = os.getloadavg()
    (work / "figures.json").write_text(json.dumps(figures, indent=2, default=str))
    return figures


# --------------------------------------------------------------------------- the report

def _load(case: dict) -> str:
    return f"{case['load'][0]:.2f}→{case['load'][1]:.2f}"


def report(f: dict, command: str) -> str:
    ls, le = f["load_start"], f["load_end"]
    lines = [f"## {dt.date.today().isoformat()}: scaling, backfill and Dagster's overhead{' (quick)' if f['quick'] else ''}",
             f"Machine: {machine()}. Command: `{command}` (fresh temporary data dirs; each figure in its own process). "
             f"Load averages (1/5/15 min) at start {ls[0]:.2f}/{ls[1]:.2f}/{ls[2]:.2f}, at end {le[0]:.2f}/{le[1]:.2f}/{le[2]:.2f}; "
             f"total {f['wall_s'] / 60:.1f} min. Peak RSS includes the ~{f['scaling'][0]['data']['rss_after_import_mib']:.0f} MiB "
             "of the imports (Dagster, polars, LightGBM, torch, Great Expectations): the second figure in brackets.",
             "", "### One partition, by rows per day (history: 6 days set up before it)", "",
             "| scale | raw rows / day | data layer: wall | data layer: peak RSS | training set rows (train split) | "
             "teacher: wall (LightGBM fit) | teacher: trees | teacher: peak RSS | load (data / teacher) |",
             "|---|---|---|---|---|---|---|---|---|"]
    base = f["scaling"][0]
    for p in f["scaling"]:
        lines.append(_partition_row(p, f"{p['scale']}x"))
    lines += ["", "Against 1x (time per row should stay flat if time grows linearly with rows):", "",
              "| scale | rows | data layer time | data layer: inside its steps | teacher time | teacher time per tree | "
              "marginal s per 1,000 more rows: data layer / teacher fit per 100 trees | data layer peak RSS − imports | teacher peak RSS − imports |",
              "|---|---|---|---|---|---|---|---|---|"]
    for i, p in enumerate(f["scaling"]):
        lines.append(_ratio_row(p, base, f["scaling"][i - 1] if i else None))
    lines += ["", "### History already materialized (1x)", "",
              "Both set up by `ingest_job` (the few days in a fresh directory; the many are the in-process backfill's), "
              "then the partition's data layer, weak labels and training set.", "",
              "| days materialized before the partition | raw rows / day | data layer: wall | data layer: peak RSS | "
              "training set rows (train split) | teacher: wall (LightGBM fit) | teacher: trees | teacher: peak RSS | load (data / teacher) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for p in f["history"]:
        lines.append(_partition_row(p, f"{p['history']} (partition {p['day']})"))
    inproc, multi = f["backfill"]
    n = inproc["days"]
    lines += ["", f"### Backfill: `ingest_job` for {n} days (1x), one run per day in order", "",
              "One-off costs are inside these clocks, as a user meets them: the in-process runner imports Great Expectations "
              "and snorkel once; the multiprocess executor starts its forkserver (preloading definitions, Great Expectations, "
              "torch, LightGBM) once and forks a process per step, each importing what the preload lacks (snorkel for weak labels).", "",
              "| executor | wall | per day (median) | speed-up | peak memory | load |", "|---|---|---|---|---|---|"]
    for case in (inproc, multi):
        per_day = sorted(x["s"] for x in case["per_day"])
        memory = (f"process {case['peak_rss_mib']:.0f} MiB (RSS after day 1 {case['per_day'][0]['rss_mib']:.0f}, "
                  f"after day {n} {case['per_day'][-1]['rss_mib']:.0f})" if case["kind"] == "backfill_inprocess" else
                  f"tree: RSS sum {case['tree_peak_rss_mib']:.0f} MiB, PSS sum {case['tree_peak_pss_mib']:.0f} MiB, "
                  f"≤ {case['tree_max_processes']} processes (launcher alone {case['peak_rss_mib']:.0f} MiB)")
        name = "in process (`execute_in_process`, as `make run`)" if case["kind"] == "backfill_inprocess" else \
            "multiprocess (`execute_job`, the definitions' forkserver executor)"
        lines.append(f"| {name} | {case['wall_s']:.1f} s | {per_day[len(per_day) // 2]:.2f} s | "
                     f"{inproc['wall_s'] / case['wall_s']:.2f}x | {memory} | {_load(case)} |")
    core = f["overhead"]
    dag, plain = core[0], core[1]
    lines += ["", f"### Dagster's overhead: the same steps for {dag['days']} days (1x)", "",
              "Data layer and weak labels each day; pseudo-labels, training set, teacher, student and evaluation on the newest.", "",
              "| how | wall | overhead | peak RSS | training set rows / trees / teacher macro-F1 / student macro-F1 | load |",
              "|---|---|---|---|---|---|"]
    for case in core[:2]:
        over = case["wall_s"] - plain["wall_s"]
        name = ("Dagster: `dagster.materialize`, one run per day, persistent instance" if case is dag
                else "plain `pipeline/` calls in a loop, same Parquet files")
        m = case["metadata"]
        lines.append(f"| {name} | {case['wall_s']:.1f} s | {over:+.1f} s ({over / plain['wall_s']:+.0%}) | {case['peak_rss_mib']:.0f} MiB | "
                     f"{m['training_rows']} / {m['trees']} / {m['teacher_macro_f1']:.4f} / {m['student_macro_f1']:.4f} | {_load(case)} |")
    if len(core) > 2:
        main = core[2]
        lines.append(f"| (context) `make run`'s pattern: `ingest_job` per day, `main_job` on the newest (also label queue, drift, "
                     f"export, registry, package) | {main['wall_s']:.1f} s | — | {main['peak_rss_mib']:.0f} MiB | — | {_load(main)} |")
    lines.append("")
    lines.append(f"Dagster runs: {dag['days']}; overhead per run {(dag['wall_s'] - plain['wall_s']) / dag['days']:.2f} s. "
                 f"Imports before the clock (not in the walls): Dagster side {dag['import_s']:.1f} s, plain side {plain['import_s']:.1f} s.")
    return "\n".join(lines) + "\n"


def _partition_row(p: dict, name: str) -> str:
    data, teacher, ts = p["data"], p["teacher"], p["training_set"]["metadata"]
    rows = data["metadata"]["raw_telemetry"]["rows"]
    fit = teacher["metadata"]["seconds"]
    return (f"| {name} | {rows:,} | {data['wall_s']:.1f} s | {data['peak_rss_mib']:.0f} MiB ({data['rss_after_import_mib']:.0f}) | "
            f"{ts['rows']:,} ({ts.get('train_rows', 0):,}) | {teacher['wall_s']:.1f} s ({fit:.1f} s) | {teacher['metadata']['trees']} | "
            f"{teacher['peak_rss_mib']:.0f} MiB ({teacher['rss_after_import_mib']:.0f}) | {_load(data)} / {_load(teacher)} |")


def _ratio_row(p: dict, base: dict, previous: dict | None) -> str:
    def rows(x):
        return x["data"]["metadata"]["raw_telemetry"]["rows"]

    def grow(x, what):
        return x[what]["peak_rss_mib"] - x[what]["rss_after_import_mib"]

    r = rows(p) / rows(base)
    data_t = p["data"]["wall_s"] / base["data"]["wall_s"]
    fit = p["teacher"]["metadata"]["seconds"] / base["teacher"]["metadata"]["seconds"]
    per_tree = (p["teacher"]["metadata"]["seconds"] / p["teacher"]["metadata"]["trees"]) / \
        (base["teacher"]["metadata"]["seconds"] / base["teacher"]["metadata"]["trees"])
    steps = sum(p["data"]["steps"].values())
    marginal = "—"
    if previous is not None:
        more = (rows(p) - rows(previous)) / 1000

        def fit_per_100(x):
            return x["teacher"]["metadata"]["seconds"] / x["teacher"]["metadata"]["trees"] * 100

        marginal = (f"{(p['data']['wall_s'] - previous['data']['wall_s']) / more:.3f} / "
                    f"{(fit_per_100(p) - fit_per_100(previous)) / more:.3f}")
    return (f"| {p['scale']}x | {r:.2f}x | {data_t:.2f}x ({data_t / r:.2f} per row) | {steps:.1f} s | {fit:.2f}x fit ({fit / r:.2f} per row) | "
            f"{per_tree:.2f}x ({per_tree / r:.2f} per row) | {marginal} | {grow(p, 'data'):.0f} MiB | {grow(p, 'teacher'):.0f} MiB |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="append the figures to benchmarks/RESULTS.md")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1x/2x, 3-day backfill")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directories")
    parser.add_argument("--figures", type=Path, help="report the figures.json of an earlier run instead of measuring")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(RESULT + json.dumps(run_case(json.loads(args.case)), default=str), flush=True)
        return 0
    if args.figures:
        figures, work = json.loads(args.figures.read_text()), None
        args.quick = figures["quick"]
    else:
        work = Path(tempfile.mkdtemp(prefix="evergreen-scale-"))
        print(f"work dir {work}; load {os.getloadavg()}", flush=True)
        figures = run(args.quick, args.keep, work)
    command = "python -m benchmarks.scale" + (" --quick" if args.quick else "") + (" --record" if args.record else "")
    emit_report(report(figures, command), args.record)
    if work is not None and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
