"""What the student's refit with its validation rows (and its teacher's) is worth, rescored on a finished backtest.

``python -m benchmarks.student_refit --run OUT --day 2026-06-18 [--alpha 0] [--seeds 5] [--days 1]`` reads
the backtest folder ``OUT`` (``python -m deploy.backtest ... --out OUT``): the training window of
``--day``, the teacher of the version that day registered, and the labelled rows of the ``--days``
days after it (more than one where a day has few rows).
Per seed of the student it fits the early-stopped student on the training rows (what shipped before
``refit_with_validation``), the same student refitted on train + validation for its best epoch
(``pipeline.student.refit_with_validation``) from the version's teacher, and refitted from that teacher
boosted again on train + validation too (``refit_teacher``, what ships; only where the version's teacher
was trained on the window, and the same as the second at alpha 0), and prints the three students' accuracy on those rows
(fp32, the torch model). ``--alpha``: the distillation weight of all three (default: the one the
version's student was trained with). Nothing in the folder changes.
"""

import argparse
import datetime as dt
import json
import statistics
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.dataset import DatasetConfig, load_dataset_config
from pipeline.encoding import student_matrix
from pipeline.student import Student, adapted_spec, fit_student, refit_with_validation
from pipeline.teacher import Teacher
from pipeline.teacher_update import trained_on_window


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished backtest's --out folder")
    parser.add_argument("--day", type=dt.date.fromisoformat, required=True, help="the day whose retrain to rescore")
    parser.add_argument("--alpha", type=float, default=None)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--days", type=int, default=1, help="score on this many days after --day")
    args = parser.parse_args(argv)
    config = load_dataset_config(args.run / "dataset.yaml")
    window = pl.read_parquet(args.run / f"data/assets/training_window/{args.day}.parquet")
    version = _version_of(args.run, args.day)
    teacher = Teacher.load(version)
    shipped = json.loads((version / "student.json").read_text())["hyperparameters"]
    spec = adapted_spec(window, config, {k: shipped[k] for k in ("epochs", "batch_size")})
    spec = spec.model_copy(update={"alpha": shipped["alpha"] if args.alpha is None else args.alpha})
    after = [args.day + dt.timedelta(days=d) for d in range(1, args.days + 1)]
    rows = _labelled_rows(args.run, after)
    print(f"{version.name}: {window.height} window rows, alpha {spec.alpha}, {rows.height} rows of {after[0]}..{after[-1]}")
    window_teacher = trained_on_window(version)
    if not window_teacher:
        print(f"{version.name}'s teacher was not boosted on the window (an update or a recalled one): no teacher refit")
    fits: dict[str, list[float]] = {"early-stopped on train": [], "refitted on train + validation": [],
                                    **({"refitted, from the teacher refitted too": []} if window_teacher else {})}
    for seed in range(args.seeds):
        seeded = config.model_copy(update={"training": config.training.model_copy(update={"seed": seed})})
        student = fit_student(window, teacher, seeded, spec)
        fitted = [student, refit_with_validation(student, window, teacher, seeded, spec)]
        if window_teacher:
            fitted.append(refit_with_validation(student, window, teacher, seeded, spec, refit_teacher=True))
        for scores, one in zip(fits.values(), fitted, strict=True):
            scores.append(_accuracy(one, rows, teacher, config))
        print(f"seed {seed}: " + ", ".join(f"{name} {scores[-1]:.4f}" for name, scores in fits.items()), flush=True)
    print("mean: " + ", ".join(f"{name} {statistics.mean(scores):.4f}" for name, scores in fits.items()))
    return 0


def _version_of(run: Path, day: dt.date) -> Path:
    versions = sorted((run / "data/registry/versions").glob(f"v{day:%Y%m%d}-*"))
    if len(versions) != 1:
        raise SystemExit(f"{run}: expected one version registered on {day}, found {[v.name for v in versions]}")
    return versions[0]


def _labelled_rows(run: Path, days: list[dt.date]) -> pl.DataFrame:
    """The days' feature rows with their gold labels (a backtest's labels arrive after its features)."""
    features = pl.concat([pl.read_parquet(run / f"data/assets/features/{day}.parquet") for day in days])
    gold = pl.concat([pl.read_parquet(f).select("row_id", "label") for f in (run / "data/assets/gold_labels").glob("*.parquet")])
    return features.drop("label").join(gold.unique("row_id"), on="row_id")


def _accuracy(student: Student, rows: pl.DataFrame, teacher: Teacher, config: DatasetConfig) -> float:
    predicted = np.asarray(config.classes)[student.predict_proba(student_matrix(rows, teacher.preprocessing)).argmax(axis=1)]
    return float(np.mean(predicted == rows["label"].to_numpy()))


if __name__ == "__main__":
    raise SystemExit(main())
