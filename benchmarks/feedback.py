"""Feedback-loop benchmarks, recorded in benchmarks/RESULTS.md (part of ``make bench``).

1. The 60-day replay (``python -m deploy.replay``, firmware roll-out on day 30): accuracy before
   the roll-out, the trough, days to the data and concept alarms, days from alarm to recovery,
   false alarms on the stationary days, retrain runs; wall time.
2. Each teacher update a few days after the replay's roll-out retrain: that production teacher
   updated by leaf refit, continued boosting and a full window retrain on the same training set,
   built from the replay's features and gold labels: time and macro-F1 on its test split.
3. The drift tests of one partition (one day against the production reference), per backend.
"""

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from benchmarks.results import machine, record

ROOT = Path(__file__).resolve().parent.parent


def replay(out: Path) -> dict:
    env = dict(os.environ, DAGSTER_DISABLE_TELEMETRY="1", EVERGREEN_HASH_KEY=os.environ.get("EVERGREEN_HASH_KEY", "evergreen-benchmark"))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "deploy.replay", "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"deploy.replay failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return {**json.loads((out / "summary.json").read_text()), "wall_s": time.perf_counter() - started}


def _timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def update_methods(out: Path, summary: dict, days_after: int) -> dict:
    """Every teacher update ``days_after`` days after the replay's roll-out retrain, on the training
    set of that day built from the replay's own features and gold labels: time and test macro-F1,
    and which one ``update_teacher`` chooses (the test split plays no part in its choice)."""
    sys.path.insert(0, str(ROOT))
    from pipeline import teacher_update
    from pipeline.dataset import load_dataset_config
    from pipeline.policy import INCREMENTAL, Decision, adapted_hyperparameters
    from pipeline.registry import Registry
    from pipeline.teacher import Teacher, fit_teacher
    from pipeline.training_set import SPLIT, TEST, TRAIN, VALIDATION, build_training_set

    config = load_dataset_config(out / "simulator.yaml")
    registry = Registry(out / "data" / "registry")
    first = summary["retrains"][0]
    [version] = [registry.get(v) for v in registry.versions() if registry.get(v).entry["lineage"]["run_id"] == first["run"]]
    production, trained_through = Teacher.load(version.directory), dt.date.fromisoformat(version.entry["lineage"]["trained_through"])
    day = trained_through + dt.timedelta(days=days_after)
    window = [day - dt.timedelta(days=i) for i in range(config.partitions.window_days)]
    assets = out / "data" / "assets"
    frame = build_training_set(pl.concat([pl.read_parquet(assets / "features" / f"{d}.parquet") for d in window], how="diagonal_relaxed"),
                               pl.concat([pl.read_parquet(assets / "gold_labels" / f"{d}.parquet") for d in window]), config)
    new = frame.filter((pl.col(SPLIT) == TRAIN) & (pl.col("timestamp").dt.date() > trained_through))
    validation, test = frame.filter(pl.col(SPLIT) == VALIDATION), frame.filter(pl.col(SPLIT) == TEST)
    teacher_params, _ = adapted_hyperparameters(0.12, frame.height, config.training, config.feedback.policy)  # a one-feature data drift
    decision = Decision(INCREMENTAL, "benchmark", day, version.version, None, 0.12, teacher_params, {})
    methods = {
        "production (no update)": (production, 0.0),
        "refit": _timed(lambda: teacher_update.refit(production, new, teacher_params["refit_decay"])),
        "continue": _timed(lambda: teacher_update.continue_training(production, new, validation, config,
                                                                     teacher_params["learning_rate"], teacher_params["rounds"])),
        "window (full retrain)": _timed(lambda: fit_teacher(frame, config)),
    }
    chosen = teacher_update.update_teacher(frame, production, trained_through, decision, config)
    return {
        "day": str(day), "days_after": days_after, "from_version": version.version, "new_rows": new.height,
        "train_rows": frame.filter(pl.col(SPLIT) == TRAIN).height, "chosen": chosen.method, "reason": chosen.reason,
        "methods": {name: {"seconds": s, "test_macro_f1": teacher_update.macro_f1(t, test)} for name, (t, s) in methods.items()},
    }


def drift_cost(out: Path, summary: dict) -> dict:
    """One day's drift report (inputs, stability, predictions, fresh labels) per backend."""
    sys.path.insert(0, str(ROOT))
    from pipeline import drift
    from pipeline.dataset import load_dataset_config
    from pipeline.encoding import student_matrix
    from pipeline.registry import Registry
    from pipeline.student import Student

    config = load_dataset_config(out / "simulator.yaml")
    version = Registry(out / "data" / "registry").get("production")
    day = dt.date.fromisoformat(summary["retrains"][-1]["day"]) + dt.timedelta(days=3)
    features = {d: pl.read_parquet(out / "data" / "assets" / "features" / f"{d}.parquet") for d in (day - dt.timedelta(days=1), day)}
    student, preprocessing = Student.load(version.directory), version.entry["preprocessing"]
    inputs = drift.DriftInputs(day, version.version, pl.read_parquet(version.file("reference.parquet")), features[day],
                               features[day - dt.timedelta(days=1)], features[day].head(0).with_columns(pl.lit(None, pl.String).alias("label")),
                               version.entry["metrics"]["student"]["accuracy"], 1000)
    numeric, categorical = drift.monitored_features(config)
    result = {"day": str(day), "rows": features[day].height, "reference_rows": inputs.reference.height}
    for name in ("scipy", "alibi"):
        detector, import_s = _timed(lambda: drift.make_detector(name))
        _, seconds = _timed(lambda: drift.drift_report(inputs, lambda f: student.predict_proba(student_matrix(f, preprocessing)),
                                                       numeric, categorical, config.classes, config.feedback.drift,
                                                       config.feedback.concept, detector))
        result[name] = {"import_s": import_s, "report_s": seconds}
    return result


def report(summary: dict, updates: list[dict], cost: dict) -> str:
    rollout = summary["events"][0]
    lines = [
        "Feedback loop (`python -m benchmarks.feedback`, part of `make bench`): the 60-day replay of `make demo`.",
        "",
        "| figure | value | target |", "|---|---|---|",
        f"| replay wall time (7 warm-up + 60 days, in process) | {summary['wall_s']:.0f} s | |",
        f"| accuracy the week before the roll-out | {rollout['accuracy_before']:.3f} | |",
        f"| trough after the roll-out | {rollout['trough']:.3f} | |",
        f"| days from roll-out to data-drift alarm | {rollout['days_to_data_alarm']} | ≤ 1 |",
        f"| days from roll-out to concept-drift alarm (labels return from day 0) | {rollout['days_to_concept_alarm']} | ≤ 3 |",
        f"| days from roll-out to recovery (within 2 points of before) | {rollout['days_to_recovery']} | |",
        f"| false alarms on the stationary days | {summary['false_alarm_days']} / {summary['stationary_days']} | ≤ 1 per 30 |",
        f"| retrain runs | {len(summary['retrains'])}: " + ", ".join(f"{r['day']} {r['action']}" for r in summary["retrains"])
        + " | one per drift event (roll-out, new device model) |",
    ]
    for update in updates:
        lines += [
            "",
            f"Teacher updates {update['days_after']} days after the roll-out retrain ({update['day']}, from "
            f"{update['from_version']}: {update['new_rows']} of {update['train_rows']} labelled training rows are new). "
            f"`update_teacher` chose `{update['chosen']}`: {update['reason']}.",
            "",
            "| method | time | test macro-F1 |", "|---|---|---|",
        ]
        full = update["methods"]["window (full retrain)"]["seconds"]
        for name, m in update["methods"].items():
            share = f" ({m['seconds'] / full:.0%} of full)" if m["seconds"] and name != "window (full retrain)" else ""
            lines.append(f"| {name} | {m['seconds']:.2f} s{share} | {m['test_macro_f1']:.3f} |")
    lines += [
        "",
        f"Drift tests of one partition ({cost['day']}: {cost['rows']} rows against {cost['reference_rows']} reference rows; "
        "13 inputs, day over day, predictions):",
        "",
        "| backend | import | report |", "|---|---|---|",
    ]
    lines += [f"| {name} | {cost[name]['import_s']:.2f} s | {cost[name]['report_s']:.2f} s |" for name in ("scipy", "alibi")]
    return "\n".join(lines) + "\n"


def run(out: Path) -> str:
    """Replay into ``out`` (must not exist yet), measure, print and return the report."""
    summary = replay(out)
    text = report(summary, [update_methods(out, summary, days) for days in (2, 5)], drift_cost(out, summary))
    print(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="append the figures to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    text = run(Path(tempfile.mkdtemp(prefix="evergreen-bench-")) / "replay")
    if args.record:
        record(f"## {dt.date.today().isoformat()}: feedback loop\nMachine: {machine()}. "
               f"Command: `python -m benchmarks.feedback --record`.\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
