"""The student's gap to its teacher on the simulator, and the variants that close it.

``python -m benchmarks.student_gap [--frame training_set.parquet ...] [--dataset yaml]
[--devices-per-site N] [--variants a,b,...]`` fits the teacher once per training set, then distils
one student per variant, each sized by the pipeline's schedule for a first model (``adapted_spec``,
as the student asset does) and changed as the variant says (the "bins" variants refit the bin edges
the student reads). Per variant it prints: accuracy and
macro-F1 on every row of the day after the training set (the simulator's true labels: what the
served student meets, and six times the test split's rows, so less noisy), the same on the test
split for the torch (fp32) student and its static int8 ONNX (``pipeline.quantize``, calibrated on
training rows), the distil seconds, the epochs run (and the best one), the parameters, the ONNX
bytes, the bytes of a zip holding what the edge package ships (both models, the runtime and the
preprocessing the manifest carries; the signature and the manifest's other fields add about 2 KB)
and the int8 model's single-row latency in ONNX Runtime.

``--frame`` reads training sets a run wrote, e.g. ``python -m deploy.replay --days 3 --rollout-day
30 --warmup 7 --devices-per-site 20 --out /tmp/stud/replay`` then ``--frame
/tmp/stud/replay/data/assets/training_set/*.parquet --dataset /tmp/stud/replay/dataset.yaml
--devices-per-site 20`` (the dataset and fleet must be the run's, for the next day's rows). Without
it the set is simulated as ``benchmarks.student_speed`` does (7 days of 2,016 rows, gold labels
only, no weak, pseudo or augmented rows). "configured" is whatever the dataset YAML says. Nothing in
the repository changes.
"""

import argparse
import datetime as dt
import io
import json
import statistics
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import accuracy_score, f1_score

from pipeline import evergreen_edge as runtime, export, quantize
from pipeline.dataset import TIMESTAMP, DatasetConfig, StudentSpec, load_dataset_config
from pipeline.encoding import label_codes, student_matrix
from pipeline.student import adapted_spec, fit_student
from pipeline.teacher import Teacher, fit_teacher, teacher_preprocessing
from pipeline.training_set import SPLIT, TEST, TRAIN
from tests.conftest import DEFAULT_YAML

LATENCY_CALLS = 2000

Variant = Callable[[StudentSpec], dict]
"""A variant: the spec updates it makes to the pipeline's sized spec (a function, so that it can
scale the sized epochs)."""

VARIANTS: dict[str, Variant] = {
    "configured": lambda s: {},
    "patience 15": lambda s: {"patience": 15},
    "epochs x3 patience 15": lambda s: {"epochs": s.epochs * 3, "patience": 15},
    "hidden 128x64": lambda s: {"hidden": (128, 64)},
    "hidden 256x128": lambda s: {"hidden": (256, 128)},
    "hidden 128x64 epochs x3 patience 15": lambda s: {"hidden": (128, 64), "epochs": s.epochs * 3, "patience": 15},
    "alpha 0.5": lambda s: {"alpha": 0.5},
    "alpha 0.9": lambda s: {"alpha": 0.9},
    "alpha 1.0": lambda s: {"alpha": 1.0},
    "temperature 1": lambda s: {"temperature": 1.0},
    "temperature 4": lambda s: {"temperature": 4.0},
    "transfer labelled": lambda s: {"transfer": ("labelled",)},
    "transfer labelled+unlabelled": lambda s: {"transfer": ("labelled", "unlabelled")},
    "lr 0.001": lambda s: {"learning_rate": 1e-3},
    "lr 0.01": lambda s: {"learning_rate": 1e-2},
    "epochs x3 patience 15 alpha 0.9": lambda s: {"epochs": s.epochs * 3, "patience": 15, "alpha": 0.9},
    "epochs x3 patience 15 temperature 4": lambda s: {"epochs": s.epochs * 3, "patience": 15, "temperature": 4.0},
    "epochs x3 patience 15 alpha 0.9 temperature 4": lambda s: {"epochs": s.epochs * 3, "patience": 15, "alpha": 0.9,
                                                                 "temperature": 4.0},
    "epochs x3 patience 10 alpha 0.9": lambda s: {"epochs": s.epochs * 3, "patience": 10, "alpha": 0.9},
    "bins 0": lambda s: {"numeric_bins": 0},
    "bins 4": lambda s: {"numeric_bins": 4},
    "bins 16": lambda s: {"numeric_bins": 16},
}


@dataclass(frozen=True)
class Row:
    name: str
    next_accuracy: float
    next_macro_f1: float
    accuracy: float
    macro_f1: float
    int8_accuracy: float
    int8_macro_f1: float
    seconds: float
    epochs_run: int
    best_epoch: int
    parameters: int
    fp32_bytes: int
    int8_bytes: int
    package_bytes: int
    latency_us: float


def scores(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> tuple[float, float]:
    return (float(accuracy_score(labels, predicted)),
            float(f1_score(labels, predicted, labels=list(range(n_classes)), average="macro", zero_division=0)))


def package_bytes(fp32: Path, int8: Path, preprocessing: dict) -> int:
    """The deflated zip of what the edge package ships, less the signature and small manifest fields."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(fp32.name, fp32.read_bytes())
        archive.writestr(int8.name, int8.read_bytes())
        archive.writestr("evergreen_edge.py", Path(runtime.__file__).read_bytes())
        archive.writestr("manifest.json", json.dumps({"preprocessing": preprocessing}, indent=2))
    return len(buffer.getvalue())


def single_row_latency_us(path: Path, matrix: np.ndarray) -> float:
    session = export.onnx_session(path)
    rows = [matrix[i:i + 1] for i in range(min(len(matrix), 200))]
    for row in rows[:50]:
        session.run(None, {export.INPUT_NAME: row})
    timings = []
    for i in range(LATENCY_CALLS):
        started = time.perf_counter_ns()
        session.run(None, {export.INPUT_NAME: rows[i % len(rows)]})
        timings.append(time.perf_counter_ns() - started)
    return statistics.median(timings) / 1000


def with_bins(teacher: Teacher, frame: pl.DataFrame, config: DatasetConfig, spec: StudentSpec) -> Teacher:
    """The teacher with its preprocessing refitted for ``spec``'s bins: the booster reads the same raw
    values and category codes whatever the bins, so only what the student reads changes."""
    return replace(teacher, preprocessing=teacher_preprocessing(frame.filter(pl.col(SPLIT) == TRAIN), config, spec))


def measure(name: str, spec: StudentSpec, frame: pl.DataFrame, next_day: pl.DataFrame, teacher: Teacher,
            config: DatasetConfig, work: Path) -> Row:
    teacher = with_bins(teacher, frame, config, spec)
    started = time.perf_counter()
    student = fit_student(frame, teacher, config, spec)
    seconds = time.perf_counter() - started
    test = frame.filter(pl.col(SPLIT) == TEST)
    width = teacher.preprocessing["input_width"]
    matrix = student_matrix(test, teacher.preprocessing).reshape(test.height, width).astype(np.float32)
    labels = label_codes(test, config.classes)
    n = len(config.classes)
    accuracy, macro_f1 = scores(labels, student.predict_proba(matrix).argmax(1), n)
    next_matrix = student_matrix(next_day, teacher.preprocessing).reshape(next_day.height, width).astype(np.float32)
    next_scores = scores(label_codes(next_day, config.classes), student.predict_proba(next_matrix).argmax(1), n)
    fp32, int8 = work / export.ONNX_FILE, work / quantize.INT8_FILE
    export.export_onnx(student, fp32)
    train = frame.filter(pl.col(SPLIT) == TRAIN)
    quantize.quantize_int8(fp32, int8, student_matrix(train, teacher.preprocessing).reshape(train.height, width))
    int8_probabilities = export.onnx_session(int8).run(None, {export.INPUT_NAME: matrix})[0]
    int8_accuracy, int8_macro_f1 = scores(labels, int8_probabilities.argmax(1), n)
    best = min(student.history, key=lambda h: h["validation_loss"])
    return Row(name, *next_scores, accuracy, macro_f1, int8_accuracy, int8_macro_f1, seconds, len(student.history), best["epoch"],
               student.parameters, fp32.stat().st_size, int8.stat().st_size,
               package_bytes(fp32, int8, teacher.preprocessing), single_row_latency_us(int8, matrix))


def teacher_scores(frame: pl.DataFrame, next_day: pl.DataFrame, teacher: Teacher, config: DatasetConfig) -> list[float]:
    """Test-split accuracy and macro-F1, then the next day's."""
    test, n = frame.filter(pl.col(SPLIT) == TEST), len(config.classes)
    return [*scores(label_codes(test, config.classes), teacher.predict_proba(test).argmax(1), n),
            *scores(label_codes(next_day, config.classes), teacher.predict_proba(next_day).argmax(1), n)]


def sized_config(config: DatasetConfig, devices_per_site: int, seed: int) -> DatasetConfig:
    return config.model_copy(update={
        "simulator": config.simulator.model_copy(update={"devices_per_site": devices_per_site}),
        "training": config.training.model_copy(update={"seed": seed})})


def next_day_rows(frame: pl.DataFrame, config: DatasetConfig) -> pl.DataFrame:
    """Every row of the day after the frame's newest, with the simulator's true label: what the
    served student meets, and ten times the test split's rows."""
    from tests.support.helpers import labelled_features

    return labelled_features(config, [frame[TIMESTAMP].dt.date().max() + dt.timedelta(days=1)])


def simulated_frame(config: DatasetConfig) -> pl.DataFrame:
    from benchmarks.student_speed import DAYS, START
    from tests.support.helpers import days_from, training_frame

    return training_frame(config, days_from(START, DAYS))


def print_table(source: str, frame: pl.DataFrame, next_day: pl.DataFrame, teacher: list[float], rows: list[Row]) -> None:
    counts = dict(frame.group_by(SPLIT).len().iter_rows())
    print(f"\n{source}: {frame.height} rows {counts}, next day {next_day.height} rows; teacher: test accuracy "
          f"{teacher[0]:.4f}, macro-F1 {teacher[1]:.4f}; next day accuracy {teacher[2]:.4f}, macro-F1 {teacher[3]:.4f}")
    print("| variant | next-day acc | next-day F1 | test acc fp32 | test F1 fp32 | test acc int8 | test F1 int8 "
          "| next-day gap to teacher (pts) | distil s | epochs (best) | params | fp32 B | int8 B | package B | int8 1-row µs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.name} | {r.next_accuracy:.4f} | {r.next_macro_f1:.4f} | {r.accuracy:.4f} | {r.macro_f1:.4f} "
              f"| {r.int8_accuracy:.4f} | {r.int8_macro_f1:.4f} | {100 * (r.next_accuracy - teacher[2]):+.2f} "
              f"| {r.seconds:.1f} | {r.epochs_run} ({r.best_epoch}) | {r.parameters} | {r.fp32_bytes} | {r.int8_bytes} "
              f"| {r.package_bytes} | {r.latency_us:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frame", type=Path, nargs="*", default=[], help="training sets a run wrote")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_YAML, help="the dataset YAML the frames came from")
    parser.add_argument("--devices-per-site", type=int, default=21, help="the simulator's fleet the frames came from")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--variants", help="comma-separated names (default: all): " + ", ".join(VARIANTS))
    args = parser.parse_args()
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    unknown = set(names) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}")
    config = sized_config(load_dataset_config(args.dataset), args.devices_per_site, args.seed)
    frames = {str(p): pl.read_parquet(p) for p in args.frame} or {"simulated 7 days": simulated_frame(config)}
    for source, frame in frames.items():
        next_day = next_day_rows(frame, config)
        teacher = fit_teacher(frame, config)
        sized = adapted_spec(frame, config, {})
        rows = []
        with tempfile.TemporaryDirectory(prefix="evergreen-student-gap-") as tmp:
            for name in names:
                spec = sized.model_copy(update=VARIANTS[name](sized))
                rows.append(measure(name, spec, frame, next_day, teacher, config, Path(tmp)))
        print_table(source, frame, next_day, teacher_scores(frame, next_day, teacher, config), rows)


if __name__ == "__main__":
    main()
