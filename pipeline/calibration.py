"""Calibration of the served model's class probabilities, fitted on the validation split at training
time and stored with the model version (``calibration.json``).

Temperature scaling: one number, ``p_T ∝ p ** (1 / T)``, chosen to minimise the log-loss on the
validation rows. It keeps the argmax (so the predictions and every gate stay as they are) and fixes
the over- or under-confidence that a max-probability reads as an accuracy. One parameter is what a
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
from scipy.optimize import minimize_scalar

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
        atomic.write_text(path, json.dumps({"method": "temperature", "temperature": self.temperature, "rows": self.rows}, indent=2))

    @classmethod
    def load(cls, path: Path) -> "Calibrator":
        """The calibrator at ``path``; identity when the version predates calibration."""
        if not path.exists():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(float(data["temperature"]), int(data.get("rows", 0)))


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels], _TINY, 1.0))))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> Calibrator:
    """The temperature in [0.05, 20] with the least log-loss on (``probabilities``, class codes ``labels``)."""
    if not len(labels):
        return Calibrator()
    result = minimize_scalar(lambda log_t: log_loss(Calibrator(float(np.exp(log_t))).apply(probabilities), labels),
                             bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return Calibrator(round(float(np.exp(result.x)), 6), int(len(labels)))


def calibrate_student(student: Student, validation: pl.DataFrame, preprocessing: dict, classes: tuple[str, ...]) -> Calibrator:
    """The student's temperature on its labelled validation rows (held out from its training)."""
    labels = label_codes(validation, classes)
    labelled = labels >= 0
    return fit_temperature(student.predict_proba(student_matrix(validation.filter(pl.Series(labelled)), preprocessing)), labels[labelled])
