"""Time to distil the student on a 14,000-row training set (2,000 rows a day for 7 days) with the
batch size and epochs the pipeline picks for a first model (no drift report yet), as the student
asset does. Run by hand: ``python -m benchmarks.student_speed [--frame saved.parquet]``
(``--frame`` reuses a training set written by an earlier run)."""

import argparse
import datetime as dt
import time
from pathlib import Path

import polars as pl

from pipeline import drift, policy
from pipeline.dataset import load_dataset_config
from pipeline.student import adapted_spec, fit_student, transfer_counts
from pipeline.teacher import fit_teacher
from tests.conftest import DEFAULT_YAML

DEVICES_PER_SITE = 21  # 4 sites x 21 devices x 24 hours = 2,016 rows a day
DAYS, START = 7, dt.date(2026, 10, 1)


def training_frame(config, saved: Path | None) -> pl.DataFrame:
    if saved and saved.is_file():
        return pl.read_parquet(saved)
    from tests.support.helpers import days_from, training_frame as simulated

    frame = simulated(config, days_from(START, DAYS))
    if saved:
        frame.write_parquet(saved)
    return frame


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frame", type=Path)
    config = load_dataset_config(DEFAULT_YAML)
    config = config.model_copy(update={"simulator": config.simulator.model_copy(update={"devices_per_site": DEVICES_PER_SITE})})
    frame = training_frame(config, parser.parse_args().frame)
    started = time.perf_counter()
    teacher = fit_teacher(frame, config)
    teacher_seconds = time.perf_counter() - started
    decision = policy.decide_from_reports(START + dt.timedelta(days=DAYS - 1), drift.empty_report(), config)
    spec = adapted_spec(frame, config, decision.student)
    started = time.perf_counter()
    student = fit_student(frame, teacher, config, spec)
    seconds = time.perf_counter() - started
    best = min(student.history, key=lambda h: h["validation_loss"])
    print(f"rows {frame.height}, transfer {transfer_counts(frame, spec)}")
    print(f"batch {spec.batch_size}, epochs at most {spec.epochs}, run {len(student.history)}, best epoch {best['epoch']} "
          f"(validation loss {best['validation_loss']:.4f})")
    print(f"distil seconds {seconds:.1f} (teacher fit before it: {teacher_seconds:.1f} s)")


if __name__ == "__main__":
    main()
