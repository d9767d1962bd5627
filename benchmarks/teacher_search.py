"""The teacher search benchmark (issue 22): what tuning buys, what it costs, and what its warm start saves.

    python -m benchmarks.teacher_search [--seeds 1,2,3] [--streams sudden,gradual] [--no-simulator]
                                        [--warm-trials 20] [--record]

On the simulator (``config/broadband.yaml``: the week before its firmware roll-out and the week from
it) and on generated streams with known drift (``examples/streams.py``: the week before the change
and the week from it),
for each seed (the simulator's or the stream's: the data; and ``training.seed``: LightGBM's and TPE's):

1. Tuned against the YAML's defaults, as a retrain makes them: the window chosen with the defaults
   (``pipeline.recency``), then the teacher fitted with the YAML's parameters or searched at the
   default budget (``tuning.teacher``), both scored on the TEST split (macro-F1; the search saw the
   validation split only); the retrain (window choice, teacher, student) timed with and without.
2. A re-tune after the drift: a search on the week before
   (the production model's, its study kept in SQLite), then on the new week either warm (that study
   continued, trial 0 the production parameters) or cold (a new study, trial 0 the YAML's), both for
   ``--warm-trials`` trials without a time limit: the best validation log-loss per trial, and the
   trial at which the warm search reaches the cold one's best.
"""

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import polars as pl

from benchmarks.results import emit_report, machine
from examples import streams
from pipeline import cleaning, features as feature_lib, labels, recency, sources, training_set as training_lib
from pipeline.dataset import LABEL, DatasetConfig, TeacherSearchSpec, load_dataset_config
from pipeline.student import adapted_spec, fit_student
from pipeline.teacher import fit_teacher, production_params
from pipeline.teacher_search import OBJECTIVE, search_teacher
from pipeline.teacher_update import macro_f1
from pipeline.training_set import SPLIT, TEST, VALIDATION

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_YAML = ROOT / "config" / "broadband.yaml"
KEY = b"evergreen-benchmark-key"
WEEK = 7


def window_frame(config: DatasetConfig, days: list[dt.date]) -> pl.DataFrame:
    """The gold-label training set of ``days`` from any source: cleaned rows, features with the
    previous days' history, the labels that came back, the configured split."""
    history_days = config.partitions.history_days
    earliest = config.partitions.start_date
    wanted = [days[0] - dt.timedelta(days=k) for k in range(history_days, 0, -1) if days[0] - dt.timedelta(days=k) >= earliest]
    clean = {d: cleaning.clean_day(sources.read_raw_day(config, d), config, d, KEY).clean for d in [*wanted, *days]}
    feats, gold = [], []
    for day in days:
        previous = [clean[p] for p in (day - dt.timedelta(days=k) for k in range(1, history_days + 1)) if p in clean]
        history = pl.concat(previous) if previous else clean[day].head(0)
        feats.append(feature_lib.build_features(clean[day], history, config).drop(LABEL).with_columns(pl.lit(None, pl.String).alias(LABEL)))
        gold.append(labels.gold_labels(clean[day], config, day, KEY))
    return training_lib.split_gold(pl.concat(feats), pl.concat(gold), config)


def configured(config: DatasetConfig, seed: int, **search) -> DatasetConfig:
    """``config`` with ``training.seed`` and, for the searches, tuning on with these ``tuning.teacher`` settings."""
    tuning = config.training.tuning.model_copy(update={
        "enabled": True, "teacher": TeacherSearchSpec.model_validate({**config.training.tuning.teacher.model_dump(), **search})})
    return config.model_copy(update={"training": config.training.model_copy(update={"seed": seed, "tuning": tuning})})


def _timed(build):
    started = time.perf_counter()
    made = build()
    return made, time.perf_counter() - started


def _validation_logloss(teacher, frame: pl.DataFrame) -> float:
    """The search's objective, recomputed for the default teacher: weighted multi-class log-loss on validation."""
    from sklearn.metrics import log_loss

    from pipeline.encoding import label_codes

    validation = frame.filter(pl.col(SPLIT) == VALIDATION)
    return float(log_loss(label_codes(validation, teacher.classes), teacher.predict_proba(validation),
                          sample_weight=validation["weight"].to_numpy(), labels=list(range(len(teacher.classes)))))


def tuned_against_defaults(frame: pl.DataFrame, config: DatasetConfig) -> dict:
    """One retrain's model layer with the YAML's parameters and with the search (see the docstring)."""
    choice, window_s = _timed(lambda: recency.choose_window(frame, config))
    rows = recency.apply(frame, choice)
    default, fit_s = _timed(lambda: fit_teacher(rows, config))
    search, search_s = _timed(lambda: search_teacher(rows, config))
    _, student_s = _timed(lambda: fit_student(rows, default, config, adapted_spec(rows, config, {})))
    test = rows.filter(pl.col(SPLIT) == TEST)
    without = window_s + fit_s + student_s
    return {
        "window_days": choice.days, "train_rows": rows.filter(pl.col(SPLIT) == "train").height, "test_rows": test.height,
        "default_f1": macro_f1(default, test), "tuned_f1": macro_f1(search.teacher, test),
        "default_val_loss": _validation_logloss(default, rows), "tuned_val_loss": min(t["value"] for t in search.trials if t["value"] is not None),
        "trials": len(search.trials), "pruned": sum(t["state"] == "pruned" for t in search.trials),
        "chosen_warm_start": search.chosen_warm_start, "params": search.params,
        "window_s": window_s, "fit_s": fit_s, "search_s": search_s, "student_s": student_s,
        "ratio": (without - fit_s + search_s) / without,
    }


def _best_so_far(search) -> list[float]:
    return [h["best"] for h in search.history()]


def warm_against_cold(before: pl.DataFrame, after: pl.DataFrame, config: DatasetConfig, work: Path) -> dict:
    """A re-tune on ``after`` continuing the study of a search on ``before``, against a fresh study."""
    url = f"sqlite:///{work / 'optuna.db'}"
    production = search_teacher(before, config, storage_url=url)
    warm = search_teacher(after, config, production=production_params(production.teacher.booster), storage_url=url)
    cold = search_teacher(after, config)
    warm_curve, cold_curve = _best_so_far(warm), _best_so_far(cold)
    reached = next((i + 1 for i, v in enumerate(warm_curve) if v <= cold_curve[-1]), None)
    cold_reached = next(i + 1 for i, v in enumerate(cold_curve) if v <= cold_curve[-1])
    return {"warm": warm_curve, "cold": cold_curve, "warm_trials_to_cold_best": reached, "cold_trials_to_cold_best": cold_reached,
            "warm_first": warm_curve[0], "cold_first": cold_curve[0], "warm_pruned": sum(t["state"] == "pruned" for t in warm.trials),
            "cold_pruned": sum(t["state"] == "pruned" for t in cold.trials)}


def scenarios(names: list[str], simulator: bool, seed: int, work: Path) -> list[tuple[str, DatasetConfig, list[dt.date], list[dt.date]]]:
    """(name, config, the week before, the week after) per dataset, its data drawn with ``seed``
    (the simulator's or the stream's seed: the spread is over data, not only over the search's seed)."""
    found = []
    if simulator:
        config = load_dataset_config(DEFAULT_YAML)
        config = config.model_copy(update={"simulator": config.simulator.model_copy(update={"seed": seed})})
        rollout = config.simulator.drift.firmware_rollout
        assert rollout is not None, f"{DEFAULT_YAML} has no firmware roll-out to re-tune after"
        before = [rollout.date - dt.timedelta(days=WEEK - i) for i in range(WEEK)]
        found.append(("simulator", config, before, [d + dt.timedelta(days=WEEK) for d in before]))
    for name in names:
        spec = replace(streams.STREAMS[name], seed=seed)
        config = load_dataset_config(streams.write_stream(spec, work / "streams" / str(seed)))
        found.append((name, config, [spec.day(spec.drift_day - WEEK + i) for i in range(WEEK)],
                      [spec.day(spec.drift_day + i) for i in range(WEEK)]))
    return found


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{mean:.4f}"


def report(results: dict, seeds: list[int], warm_trials: int, budget: TeacherSearchSpec, command: str) -> str:
    lines = [
        f"## {dt.date.today().isoformat()}: the teacher's parameter search (`benchmarks/teacher_search.py`, issue 22)", "",
        f"`{command}`. Machine: {machine()}. Seeds {', '.join(map(str, seeds))}; default budget: {budget.trials} trials or "
        f"{budget.budget_seconds:.0f} s. Objective: validation {OBJECTIVE}; scores on the test split.", "",
        "| dataset | train rows | test macro-F1 YAML | test macro-F1 tuned | tuned − YAML (per seed) | val log-loss YAML → tuned "
        "| trials (pruned) | search s | retrain s without → with | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        tuned = [r["tuned"] for r in runs]
        without = [r["window_s"] + r["fit_s"] + r["student_s"] for r in tuned]
        deltas = ", ".join(f"{r['tuned_f1'] - r['default_f1']:+.4f}" for r in tuned)
        lines.append(
            f"| {name} | {tuned[0]['train_rows']} | {_spread([r['default_f1'] for r in tuned])} | {_spread([r['tuned_f1'] for r in tuned])} "
            f"| {deltas} "
            f"| {statistics.fmean(r['default_val_loss'] for r in tuned):.4f} → {statistics.fmean(r['tuned_val_loss'] for r in tuned):.4f} "
            f"| {statistics.fmean(r['trials'] for r in tuned):.0f} ({statistics.fmean(r['pruned'] for r in tuned):.0f}) "
            f"| {statistics.fmean(r['search_s'] for r in tuned):.1f} "
            f"| {statistics.fmean(without):.1f} → {statistics.fmean(w - r['fit_s'] + r['search_s'] for w, r in zip(without, tuned, strict=True)):.1f} "
            f"| {statistics.fmean(r['ratio'] for r in tuned):.2f}x (max {max(r['ratio'] for r in tuned):.2f}x) |")
    lines += ["", f"Warm-started re-tune against a cold search on the new week ({warm_trials} trials each, no time limit): "
              "the best validation log-loss after trials 1, 5, 10 and the last; trials to reach the cold search's final best.", "",
              "| dataset | seed | warm: best after 1 / 5 / 10 / last | cold: best after 1 / 5 / 10 / last | warm reaches cold's best at trial "
              "| cold reaches it at trial |", "|---|---|---|---|---|---|"]
    for name, runs in results.items():
        for r in runs:
            w = r["warm"]
            lines.append(f"| {name} | {r['seed']} | {_points(w['warm'])} | {_points(w['cold'])} | {w['warm_trials_to_cold_best'] or 'not reached'} "
                         f"| {w['cold_trials_to_cold_best']} |")
    reached = [r["warm"]["warm_trials_to_cold_best"] for runs in results.values() for r in runs]
    cold = [r["warm"]["cold_trials_to_cold_best"] for runs in results.values() for r in runs]
    lines += ["", f"Warm reaches the cold search's final best in {sum(x is not None for x in reached)} of {len(reached)} runs; "
              f"median trials to it: warm {_median(reached)}, cold {_median(cold)}."]
    return "\n".join(lines) + "\n"


def _points(curve: list[float]) -> str:
    return " / ".join(f"{curve[min(i, len(curve)) - 1]:.4f}" for i in (1, 5, 10, len(curve)))


def _median(values: list[int | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):g}" if known else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--streams", default="sudden,gradual", help="generated streams (examples/streams.py)")
    parser.add_argument("--no-simulator", action="store_true")
    parser.add_argument("--warm-trials", type=int, default=20)
    parser.add_argument("--record", action="store_true", help="append the report to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="evergreen-teacher-search-") as tmp:
        work = Path(tmp)
        for seed in seeds:
            for name, config, before_days, after_days in scenarios([n for n in args.streams.split(",") if n], not args.no_simulator, seed, work):
                before, after = window_frame(config, before_days), window_frame(config, after_days)
                run = {"seed": seed, "tuned": tuned_against_defaults(before, configured(config, seed))}
                unlimited = configured(config, seed, trials=args.warm_trials, budget_seconds=3600)
                run["warm"] = warm_against_cold(before, after, unlimited, work / f"{name}-{seed}")
                print(f"{name} seed {seed}: {run['tuned']['default_f1']:.4f} -> {run['tuned']['tuned_f1']:.4f}, "
                      f"ratio {run['tuned']['ratio']:.2f}, warm reaches cold best at {run['warm']['warm_trials_to_cold_best']}",
                      file=sys.stderr, flush=True)
                results.setdefault(name, []).append(run)
            budget = config.training.tuning.teacher
    command = "python -m benchmarks.teacher_search " + " ".join(argv if argv is not None else sys.argv[1:])
    emit_report(report(results, seeds, args.warm_trials, budget, command), args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
