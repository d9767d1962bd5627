"""Recurring concepts: when the label rule changes back to one an earlier model learned, that model
knows it better than anything the few rows since the change can teach. A retrain for a confirmed
change of the label rule therefore also tries the teachers of the versions that served production
before, and recalls one that fits the rows since the change clearly better than the retrained
teacher; its candidate then passes the gates and the gray release like any other.

Judged on the validation rows since the change: the retrained teacher did not train on them, and no
past teacher saw them. A past teacher is recalled when its accuracy gain over the retrained one, row
by row, is above zero with ``z`` standard errors to spare, on at least ``min_rows`` rows (a rule that
flipped back shows a gap of tens of points within a day's labels; a small gain never recalls).
"""

from dataclasses import dataclass

import numpy as np
import polars as pl

from pipeline.dataset import LABEL, RecallSpec
from pipeline.evaluation import paired_gain_lower_bound
from pipeline.teacher import Teacher


@dataclass(frozen=True)
class Recall:
    version: str
    teacher: Teacher
    accuracy: float
    retrained_accuracy: float
    rows: int
    lower_bound: float
    """The gain over the retrained teacher's accuracy, less ``z`` standard errors."""

    @property
    def reason(self) -> str:
        return (f"recalled the teacher of {self.version}: accuracy {self.accuracy:.3f} on the {self.rows} validation rows "
                f"since the change against {self.retrained_accuracy:.3f} for the retrained teacher (gain at least "
                f"{self.lower_bound:.3f}); the rule came back to one it learned")


def readable(teacher: Teacher, rows: pl.DataFrame) -> bool:
    """Whether ``rows`` hold every input the teacher was trained on (a version of an older schema may not)."""
    return set(teacher.preprocessing["feature_order"]) <= set(rows.columns)


def best_past(retrained: Teacher, past: dict[str, Teacher], rows: pl.DataFrame, spec: RecallSpec) -> Recall | None:
    """The past teacher (``past``: version to teacher) with the surest gain over ``retrained`` on
    ``rows``, if any is sure at all."""
    if rows.height < spec.min_rows:
        return None
    truth = rows[LABEL].to_numpy()
    retrained_correct = _correct(retrained, rows, truth)
    best = None
    for version, teacher in past.items():
        if not readable(teacher, rows):
            continue
        correct = _correct(teacher, rows, truth)
        lower = paired_gain_lower_bound(correct, retrained_correct, spec.z)
        if lower > 0 and (best is None or lower > best.lower_bound):
            best = Recall(version, teacher, float(correct.mean()), float(retrained_correct.mean()), rows.height, round(lower, 4))
    return best


def _correct(teacher: Teacher, rows: pl.DataFrame, truth: np.ndarray) -> np.ndarray:
    return np.asarray(teacher.classes)[teacher.predict_proba(rows).argmax(axis=1)] == truth
