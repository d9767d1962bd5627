"""Model evaluation on the test split: headline metrics, per-class, per-slice, and one small plot.

Metrics come from scikit-learn rather than hand-written formulas. Slices (site, firmware, ...) show
where a model fails when the headline hides it: a firmware roll-out can sink one slice while the
overall accuracy barely moves.
"""

import base64
import datetime as dt
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from pipeline import atomic
from pipeline.dataset import SITE, TIMESTAMP, DatasetConfig
from pipeline.encoding import label_codes, student_matrix
from pipeline.student import Student
from pipeline.teacher import Teacher
from pipeline.training_set import SPLIT, TEST


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: tuple[str, ...]) -> dict:
    labels = list(range(len(classes)))
    precision, recall, _, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "rows": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else float("nan"),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class": {
            c: {"precision": float(precision[i]), "recall": float(recall[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def slice_metrics(frame: pl.DataFrame, y_true: np.ndarray, y_pred: np.ndarray, columns: list[str]) -> dict:
    """Accuracy and row count per value of each slicing column."""
    scored = frame.select(columns).with_columns(pl.Series("__ok", y_true == y_pred))
    out: dict[str, dict] = {}
    for col in columns:
        grouped = scored.group_by(col).agg(pl.col("__ok").mean().alias("accuracy"), pl.len().alias("rows")).sort(col)
        out[col] = {str(r[col]): {"accuracy": float(r["accuracy"]), "rows": int(r["rows"])} for r in grouped.iter_rows(named=True)}
    return out


def newest_day_mask(frame: pl.DataFrame) -> np.ndarray:
    day = frame[TIMESTAMP].dt.date()
    return (day == day.max()).to_numpy()


def confusion_png(matrices: dict[str, list[list[int]]], classes: tuple[str, ...]) -> bytes:
    """Side-by-side row-normalised confusion matrices, small enough to embed in Dagster metadata."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(matrices), figsize=(3.2 * len(matrices), 3.0), dpi=72)
    for ax, (title, matrix) in zip(np.atleast_1d(axes), matrices.items()):
        m = np.asarray(matrix, dtype=float)
        m = m / np.clip(m.sum(axis=1, keepdims=True), 1, None)
        ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(classes)), classes, rotation=45, fontsize=7, ha="right")
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("predicted", fontsize=7)
    return _png(fig)


def learning_curve_png(curves: dict[str, list[float]], x_label: str) -> bytes:
    """Loss curves (e.g. train and validation loss per epoch, or per federated round) on one axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.0, 2.6), dpi=72)
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=name)
    ax.set_xlabel(x_label, fontsize=8)
    ax.set_ylabel("loss", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    return _png(fig)


def pareto_png(points: list[dict], chosen: dict | None, max_latency_us: float) -> bytes:
    """Macro-F1 against single-row latency of a search's trials (``latency_us``, ``macro_f1``,
    ``pareto``, ``warm_start``), its Pareto front joined, the chosen point and the warm start marked,
    and the latency budget when it is near enough to show."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.4, 3.0), dpi=72)
    ax.scatter([p["latency_us"] for p in points], [p["macro_f1"] for p in points], s=14, color="0.6", label="trial")
    front = sorted((p for p in points if p["pareto"]), key=lambda p: p["latency_us"])
    ax.plot([p["latency_us"] for p in front], [p["macro_f1"] for p in front], marker="o", markersize=4, label="Pareto front")
    for point, marker, label in ((next(p for p in points if p["warm_start"]), "s", "YAML's student"), (chosen, "*", "chosen")):
        if point is not None:
            ax.scatter([point["latency_us"]], [point["macro_f1"]], marker=marker, s=90, facecolors="none", edgecolors="C3", label=label)
    if max_latency_us <= 1.5 * max(p["latency_us"] for p in points):
        ax.axvline(max_latency_us, color="C3", linestyle=":", linewidth=1, label="latency budget")
    ax.set_xlabel("single-row latency, µs (int8, edge runtime)", fontsize=8)
    ax.set_ylabel("validation macro-F1", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    return _png(fig)


def _pyplot():
    """pyplot on the Agg backend (no display), imported only when a plot is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _pyplot().close(fig)
    return buf.getvalue()


def png_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def judged_test_rows(training_set: pl.DataFrame, change_day: dt.date | None) -> pl.DataFrame:
    """The test rows a model is evaluated and gated on: after a confirmed change of the label rule only
    the days since it, where production is known to be wrong (before it, production was right about a
    rule that no longer holds, and a model of the new rule, or one recalled for a rule that came back,
    would look worse there); every test row when there is no change or no test row since it yet."""
    test = training_set.filter(pl.col(SPLIT) == TEST)
    since = test.filter(pl.col(TIMESTAMP).dt.date() >= change_day) if change_day else test
    return since if since.height else test


def paired_gain_lower_bound(correct: np.ndarray, baseline_correct: np.ndarray, z: float) -> float:
    """The accuracy gain of one model over another, scored row by row on the same rows (booleans),
    less ``z`` standard errors of the mean gain: pairing removes the rows both get right or wrong
    from the noise, so a real gap shows on far fewer rows than two separate samples need."""
    gain = correct.astype(float) - baseline_correct.astype(float)
    spread = gain.std(ddof=1) if len(gain) > 1 else 0.0
    return float(gain.mean() - z * spread / math.sqrt(len(gain)))


def evaluate_models(training_set: pl.DataFrame, teacher: Teacher, student: Student, config: DatasetConfig,
                    change_day: dt.date | None = None) -> dict:
    """Teacher and student on the test split (and on its newest day), with slices by site and by
    every categorical feature (firmware, device model); after a confirmed change of the label rule,
    on its days (``judged_test_rows``): the figure the concept test later holds fresh labels against."""
    test = judged_test_rows(training_set, change_day)
    y = label_codes(test, config.classes)
    predictions = {
        "teacher": teacher.predict_proba(test).argmax(axis=1),
        "student": student.predict_proba(student_matrix(test, teacher.preprocessing)).argmax(axis=1),
    }
    newest = newest_day_mask(test)
    slices = [SITE, *(f.name for f in config.categorical_features)]
    report = {"test_rows": test.height, "newest_test_day": str(test[TIMESTAMP].dt.date().max())}
    for name, pred in predictions.items():
        metrics = classification_metrics(y, pred, config.classes)
        newest_metrics = classification_metrics(y[newest], pred[newest], config.classes)
        metrics["newest_day"] = {"accuracy": newest_metrics["accuracy"], "macro_f1": newest_metrics["macro_f1"], "rows": newest_metrics["rows"]}
        metrics["slices"] = slice_metrics(test, y, pred, slices)
        report[name] = metrics
    return report


EVALUATION_FILE = "evaluation.json"


def student_slice_accuracy(directory: Path) -> dict[str, dict[str, dict[str, float]]]:
    """The served student's test accuracy per slice as a registered version (``directory``) recorded
    it: what the concept test of each slice holds fresh labels against. Empty without a report."""
    path = directory / EVALUATION_FILE
    return json.loads(path.read_text())["student"].get("slices", {}) if path.exists() else {}


@dataclass(frozen=True)
class EvaluationReport:
    """``evaluate_models``' report as an artifact: a JSON file the registry copies into the version."""

    report: dict

    def save(self, directory: Path) -> None:
        atomic.write_text(directory / EVALUATION_FILE, json.dumps(self.report, indent=2))
