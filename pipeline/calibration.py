"""Calibration of the served model's class probabilities, fitted on the validation split at training
time and stored with the model version (``calibration.json``).

Temperature scaling: one number, ``p_T ∝ p ** (1 / T)``, chosen so that the mean top-class
probability on the validation rows equals their accuracy: the figure the estimate of accuracy
without labels reads (``pipeline.estimation``). The usual choice, the temperature of least
log-loss, leaves that figure low wherever labels are noisy: a mislabelled row costs a confident
model dearly, so the log-loss keeps every confidence down. On a generated stream with 3% label
noise the least-log-loss student read 0.944 on validation rows it was right about 0.970 of the
time, and the estimate sat 2-4 points under the measured accuracy on every day.
It keeps the argmax (so the predictions and every gate stay as they are). One parameter is what a
few hundred validation rows can fit without over-fitting (per-class isotonic needs far more), and
it saves as plain JSON: nothing here is ever unpickled.

What is calibrated is what the drift report scores with: the version's student (torch), whose
argmax the int8 model the devices run reproduces within the ``int8_accuracy`` gate.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy.optimize import brentq

from pipeline import atomic
from pipeline.encoding import label_codes, student_matrix
from pipeline.student import Student

CALIBRATION_FILE = "calibration.json"
_TINY = 1e-12


@dataclass(frozen=True)
class Calibrator:
    temperature: float = 1.0
    """Above 1: the raw model was over-confident; 1: identity (a version saved before calibration)."""
    rows: int = 0
    """Validation rows it was fitted on."""

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        logits = np.log(np.clip(probabilities, _TINY, 1.0)) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        scaled = np.exp(logits)
        return scaled / scaled.sum(axis=1, keepdims=True)

    def save(self, path: Path) -> None:
        atomic.write_text(path, json.dumps({"method": "temperature", "fitted": "mean top-class probability = accuracy", "temperature": self.temperature, "rows": self.rows}, indent=2))

    @classmethod
    def load(cls, path: Path) -> "Calibrator":
        """The calibrator at ``path``; identity when the version predates calibration."""
        if not path.exists():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(float(data["temperature"]), int(data.get("rows", 0)))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> Calibrator:
    """The temperature in [0.05, 20] at which the mean top-class probability of ``probabilities``
    equals their accuracy on the class codes ``labels`` (the nearer bound when none does). The mean
    top-class probability falls as the temperature rises, so the root is unique."""
    if not len(labels):
        return Calibrator()
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))

    def excess_confidence(log_t: float) -> float:
        return float(Calibrator(float(np.exp(log_t))).apply(probabilities).max(axis=1).mean()) - accuracy

    low, high = np.log(0.05), np.log(20.0)
    if excess_confidence(low) <= 0:
        return Calibrator(0.05, int(len(labels)))
    if excess_confidence(high) >= 0:
        return Calibrator(20.0, int(len(labels)))
    return Calibrator(round(float(np.exp(brentq(excess_confidence, low, high, xtol=1e-6))), 6), int(len(labels)))


def calibrate_student(student: Student, validation: pl.DataFrame, preprocessing: dict, classes: tuple[str, ...]) -> Calibrator:
    """The student's temperature on its labelled validation rows (held out from its training)."""
    labels = label_codes(validation, classes)
    labelled = labels >= 0
    return fit_temperature(student.predict_proba(student_matrix(validation.filter(pl.Series(labelled)), preprocessing)), labels[labelled])
