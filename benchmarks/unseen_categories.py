"""A student trained before a new category appears, on the days after (``python -m benchmarks.unseen_categories``).

The simulator brings two categories nobody saw in training: the firmware roll-out (a new version on
most rows, with a new fault rate) and a new device model. For each, a teacher and two students are
trained on the week before it (the default config's student, with and without
``student.unseen_category_copies``), and every model is scored, without retraining, on the day before
and the days after: accuracy against the simulator's truth and the student's agreement with its
teacher. The students differ in that setting only.
"""

import argparse
import datetime as dt

import numpy as np
import polars as pl

from benchmarks.results import machine
from pipeline.dataset import LABEL, DatasetConfig, load_dataset_config
from pipeline.encoding import student_matrix
from pipeline.student import Student, fit_student
from pipeline.teacher import Teacher, fit_teacher
from pipeline.training_set import PROVENANCE, SPLIT, TRAIN, VALIDATION, WEIGHT
from tests.support.helpers import days_from, labelled_features

ROOT_CONFIG = "config/broadband.yaml"


def trained_before(config: DatasetConfig, event: dt.date) -> tuple[Teacher, dict[str, Student]]:
    train = labelled_features(config, days_from(event - dt.timedelta(days=9), 6)).with_columns(pl.lit(TRAIN).alias(SPLIT))
    validation = labelled_features(config, days_from(event - dt.timedelta(days=3), 2)).with_columns(pl.lit(VALIDATION).alias(SPLIT))
    window = pl.concat([train, validation]).with_columns(pl.lit(1.0).alias(WEIGHT), pl.lit("gold").alias(PROVENANCE))
    teacher = fit_teacher(window, config)
    spec = config.training.student
    students = {share: fit_student(window, teacher, config, spec.model_copy(update={"unseen_category_copies": share}))
                for share in (0.0, spec.unseen_category_copies)}
    return teacher, {f"copies {share:g}": student for share, student in students.items()}


def scores(config: DatasetConfig, event: dt.date, days: range) -> list[dict]:
    teacher, students = trained_before(config, event)
    classes = np.asarray(teacher.classes)
    rows = []
    for offset in days:
        day = labelled_features(config, [event + dt.timedelta(days=offset)])
        truth, taught = day[LABEL].to_numpy(), classes[teacher.predict_proba(day).argmax(axis=1)]
        row = {"day": offset, "teacher": float((taught == truth).mean())}
        for name, student in students.items():
            guess = classes[student.predict_proba(student_matrix(day, teacher.preprocessing)).argmax(axis=1)]
            row[name] = (float((guess == truth).mean()), float((guess == taught).mean()))
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days-after", type=int, default=5)
    args = parser.parse_args(argv)
    config = load_dataset_config(ROOT_CONFIG)
    drift = config.simulator.drift
    events = {"firmware roll-out": drift.firmware_rollout.date if drift.firmware_rollout else None,
              "new device model": drift.new_device_model.date if drift.new_device_model else None}
    print(f"{dt.date.today()} · {machine()} · `python -m benchmarks.unseen_categories --days-after {args.days_after}`")
    for name, event in events.items():
        if event is None:
            continue
        rows = scores(config, event, range(-1, args.days_after + 1))
        students = [k for k in rows[0] if k.startswith("copies")]
        print(f"\n{name} ({event}): accuracy (agreement with the teacher)\n")
        print("| day | teacher | " + " | ".join(f"student, {s}" for s in students) + " |")
        print("|---|---|" + "---|" * len(students))
        for row in rows:
            cells = " | ".join(f"{row[s][0]:.3f} ({row[s][1]:.3f})" for s in students)
            print(f"| {row['day']:+d} | {row['teacher']:.3f} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
