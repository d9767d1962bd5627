"""Estimated performance without labels: how well the production model does on today's rows, before
their labels come back (days or weeks later in the field).

Confidence-based (as NannyML's CBPE): with calibrated class probabilities ``p`` of a row, the chance
its prediction is right is ``max(p)``, so the day's expected accuracy is the mean of those, and
its expected confusion (the probability mass of each true class over each predicted class) gives
an expected macro-F1. The band is the sampling error of the realised figure around that
expectation: the accuracy is a sum of independent Bernoulli(``max p``) draws (variance
``sum p(1 - p) / n²``); the macro-F1's spread is taken from labels drawn from ``p``.

What it cannot see:
- a pure concept change (the same inputs, a new label rule): the probabilities do not move, so the
  estimate stays put; the fresh-label test (``drift.concept_drift``) remains the authority for that;
- inputs the reference never saw: calibration holds where the model was calibrated. A row with a
  numeric input beyond the reference's range or a category the reference never had is "unseen";
  when more than ``max_unseen_share`` of the day's rows are, the estimate is reported unreliable
  (the policy then falls back on the tests). A range check rather than a domain classifier: it
  costs nothing, needs no training, and says which kind of novelty it found; what it misses (new
  combinations of known values) is what calibration on the inputs' support tolerates best.

When labels come back, the estimate of the labelled rows is checked against their measured
accuracy (the row ``estimated accuracy (fresh-label rows)``): that error is what the estimate is judged on.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline import causes
from pipeline.calibration import CALIBRATION_FILE, Calibrator
from pipeline.dataset import LABEL, SITE, DatasetConfig, EstimateSpec
from pipeline.drift import ESTIMATE, ESTIMATED_ACCURACY_TEST, ESTIMATED_F1_TEST, DriftInputs, monitored_features, report_rows
from pipeline.encoding import student_matrix
from pipeline.student import Student
from pipeline.teacher import Teacher

UNSEEN_TEST = "rows outside the reference"
FRESH_ESTIMATE_TEST = f"{ESTIMATED_ACCURACY_TEST} (fresh-label rows)"
SITE_TEST = ESTIMATED_ACCURACY_TEST + " @ {}"
_DRAWS = 100


@dataclass(frozen=True)
class Estimate:
    rows: int
    accuracy: float
    accuracy_band: float
    """Half-width of the band (``band_z`` standard errors)."""
    macro_f1: float
    macro_f1_band: float


def expected_macro_f1(probabilities: np.ndarray, predicted: np.ndarray) -> float:
    """Macro-F1 of the expected confusion: per class, 2·E[hits] / (predicted + E[true]); a class
    neither predicted nor expected scores 0 (as ``release.macro_f1``)."""
    k = probabilities.shape[1]
    predicted_counts = np.bincount(predicted, minlength=k)
    hits = np.array([probabilities[predicted == c, c].sum() for c in range(k)])
    support = predicted_counts + probabilities.sum(axis=0)
    return float(np.mean(np.where(support > 0, 2 * hits / np.maximum(support, 1e-12), 0.0)))


def _sampled_macro_f1(probabilities: np.ndarray, predicted: np.ndarray, seed: int) -> np.ndarray:
    """Macro-F1 of ``predicted`` against labels drawn from ``probabilities``, ``_DRAWS`` times."""
    rng, k = np.random.default_rng(seed), probabilities.shape[1]
    cumulative = probabilities.cumsum(axis=1)
    scores = []
    for _ in range(_DRAWS):
        labels = np.minimum((rng.random((len(predicted), 1)) > cumulative).sum(axis=1), k - 1)
        hits = np.bincount(labels[labels == predicted], minlength=k)
        support = np.bincount(labels, minlength=k) + np.bincount(predicted, minlength=k)
        scores.append(np.mean(np.where(support > 0, 2 * hits / np.maximum(support, 1), 0.0)))
    return np.asarray(scores)


def estimate(probabilities: np.ndarray, band_z: float, seed: int = 0) -> Estimate:
    """The expected accuracy and macro-F1 of rows with calibrated ``probabilities``, with their bands."""
    n = len(probabilities)
    if not n:
        return Estimate(0, float("nan"), float("nan"), float("nan"), float("nan"))
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    accuracy_band = band_z * float(np.sqrt(np.sum(confidence * (1 - confidence)))) / n
    f1_band = band_z * float(np.std(_sampled_macro_f1(probabilities, predicted, seed)))
    return Estimate(n, float(confidence.mean()), accuracy_band, expected_macro_f1(probabilities, predicted), f1_band)


def unseen(reference: pl.DataFrame, current: pl.DataFrame, numeric: list[str], categorical: list[str]) -> np.ndarray:
    """Per row of ``current``: a numeric input outside the reference's range, or a category
    (missing counts as one) the reference never had."""
    flags = [pl.lit(False)]
    for name in numeric:
        low, high = reference[name].min(), reference[name].max()
        flags.append(pl.col(name).is_not_null() & ((pl.col(name) < low) | (pl.col(name) > high)) if low is not None else pl.lit(False))
    for name in categorical:
        known = reference[name].cast(pl.String).fill_null("<missing>").unique()
        flags.append(~pl.col(name).cast(pl.String).fill_null("<missing>").is_in(known.implode()))
    return current.select(pl.any_horizontal(flags).fill_null(False).alias("unseen"))["unseen"].to_numpy()


def _estimate_row(test: str, result: Estimate, reference: float, reliable: bool, spec: EstimateSpec, days: int,
                  measured: float | None = None, f1: bool = False) -> dict:
    """``effect``: the estimated drop from the reference; ``drifted``: a reliable estimate whose band
    lies below the reference by more than ``min_drop`` (the model is estimated to be hurt)."""
    value, band = (result.macro_f1, result.macro_f1_band) if f1 else (result.accuracy, result.accuracy_band)
    floor = band + spec.min_drop
    return {"test": test, "kind": ESTIMATE, "statistic": value, "low": value - band, "high": value + band,
            "effect": reference - value, "floor": floor, "drifted": reliable and reference - value > floor,
            "tested": reliable, "n_current": result.rows, "min_n": spec.min_rows, "reference_value": reference,
            "current_value": measured, "days": days}


def estimate_report(inputs: DriftInputs, calibrated: Callable[[pl.DataFrame], np.ndarray], classes: tuple[str, ...],
                    reference_macro_f1: float, numeric: list[str], categorical: list[str], spec: EstimateSpec) -> pl.DataFrame:
    """The rows of the estimate for the day (``inputs.current``), per site, and for the rows whose
    labels came back (with their measured accuracy), against the version's test accuracy."""
    current, reference = inputs.current, inputs.reference
    outside = unseen(reference, current, numeric, categorical)
    share = float(outside.mean()) if len(outside) else 0.0
    reliable = share <= spec.max_unseen_share
    probabilities = calibrated(current) if current.height else np.zeros((0, len(classes)))
    day = estimate(probabilities, spec.band_z)
    rows = [
        {"test": UNSEEN_TEST, "kind": ESTIMATE, "statistic": share, "low": None, "high": None, "effect": share,
         "floor": spec.max_unseen_share, "drifted": not reliable, "tested": True, "n_current": current.height,
         "min_n": None, "reference_value": None, "current_value": None, "days": inputs.current_days},
        _estimate_row(ESTIMATED_ACCURACY_TEST, day, inputs.reference_accuracy, reliable, spec, inputs.current_days),
        _estimate_row(ESTIMATED_F1_TEST, day, reference_macro_f1, reliable, spec, inputs.current_days, f1=True),
    ]
    if SITE in current.columns:
        for site in sorted(current[SITE].unique().drop_nulls().to_list()):
            mask = (current[SITE] == site).to_numpy()
            if mask.sum() >= spec.min_rows:
                rows.append(_estimate_row(SITE_TEST.format(site), estimate(probabilities[mask], spec.band_z), inputs.reference_accuracy,
                                          float(outside[mask].mean()) <= spec.max_unseen_share, spec, inputs.current_days))
    fresh = inputs.fresh
    if fresh.height:
        scored = calibrated(fresh)
        measured = float(np.mean(np.asarray(classes)[scored.argmax(axis=1)] == fresh[LABEL].to_numpy()))
        fresh_reliable = float(unseen(reference, fresh, numeric, categorical).mean()) <= spec.max_unseen_share
        rows.append(_estimate_row(FRESH_ESTIMATE_TEST, estimate(scored, spec.band_z), inputs.reference_accuracy,
                                  fresh_reliable, spec, inputs.fresh_days, measured))
    return report_rows(rows)


def calibrated_probabilities(directory: Path, preprocessing: dict) -> Callable[[pl.DataFrame], np.ndarray]:
    """A registered version's calibrated class probabilities (its student's, temperature-scaled): what
    its estimate is made from, in the drift report and in a gray release."""
    student, calibrator = Student.load(directory), Calibrator.load(directory / CALIBRATION_FILE)
    return lambda frame: calibrator.apply(student.predict_proba(student_matrix(frame, preprocessing)))


def explainer(directory: Path, entry: dict, probabilities: Callable[[pl.DataFrame], np.ndarray],
              config: DatasetConfig) -> Callable[[DriftInputs], list[pl.DataFrame]]:
    """What a registry version (``directory``, its ``entry``) adds to its drift report: the estimate
    from its calibrated student (``probabilities``: the raw ones) and the causes from its teacher."""
    calibrator, teacher = Calibrator.load(directory / CALIBRATION_FILE), Teacher.load(directory)
    before = causes.load_reference_contributions(teacher, directory / causes.REFERENCE_ATTRIBUTION_FILE)
    (numeric, categorical), spec = monitored_features(config), config.feedback.estimate

    def explain(inputs: DriftInputs) -> list[pl.DataFrame]:
        fresh = np.asarray(config.classes)[probabilities(inputs.fresh).argmax(axis=1)] if inputs.fresh.height else np.array([])
        return [estimate_report(inputs, lambda frame: calibrator.apply(probabilities(frame)), config.classes,
                                entry["metrics"]["student"]["macro_f1"], numeric, categorical, spec),
                causes.cause_report(teacher, inputs, fresh, categorical, spec, config.training.seed, before)]

    return explain
