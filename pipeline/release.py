"""Safe releases: the gates a candidate must pass, the gray release to a few sites first, and the
verdict that rolls it out to all or back.

Every model here is scored as the devices run it: the registry version's ONNX file (int8 when
the version has one) through ONNX Runtime, with the version's own preprocessing.
"""

import datetime as dt
import hashlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.dataset import LABEL, SITE, TIMESTAMP, CanarySpec, GateSpec
from pipeline.encoding import student_matrix
from pipeline.estimation import Estimate, estimate
from pipeline.evaluation import paired_gain_lower_bound
from pipeline.evergreen_edge import EdgeModel, OnnxModel, trusted_public_key
from pipeline.export import ONNX_FILE, onnx_session
from pipeline.quantize import INT8_FILE, Comparison
from pipeline.registry import Canary, Version
from pipeline.training_set import SPLIT, TEST

Predictor = Callable[[pl.DataFrame], np.ndarray]
"""Rows -> predicted class names."""
Calibrated = Callable[[pl.DataFrame], np.ndarray]
"""Rows -> calibrated class probabilities."""

ROLL_OUT, ROLL_BACK, PENDING = "roll_out", "roll_back", "pending"


@dataclass(frozen=True)
class Gate:
    """One blocking check's outcome, with the numbers it was decided on."""

    name: str
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def shipped_model(version: Version) -> str:
    """The model file the devices run: int8 where the version has it (older versions: fp32)."""
    return INT8_FILE if INT8_FILE in version.entry["files"] else ONNX_FILE


def predictor(version: Version, model_file: str | None = None) -> Predictor:
    """The version's model as a device runs it: its shipped ONNX file (or ``model_file``) on one
    thread, its preprocessing."""
    session = onnx_session(version.file(model_file or shipped_model(version)))
    preprocessing, classes = version.entry["preprocessing"], np.asarray(version.entry["classes"])
    input_name = session.get_inputs()[0].name

    def predict(frame: pl.DataFrame) -> np.ndarray:
        if frame.is_empty():
            return np.array([], dtype=classes.dtype)
        return classes[session.run(None, {input_name: student_matrix(frame, preprocessing)})[0].argmax(axis=1)]

    return predict


def newest_test_rows(training_set: pl.DataFrame, days: int) -> pl.DataFrame:
    """The test split's rows of its newest ``days`` days: devices no version trained on (the split is
    by device), on the data closest to what the devices see now."""
    test = training_set.filter(pl.col(SPLIT) == TEST)
    newest = sorted(test[TIMESTAMP].dt.date().unique())[-days:]
    return test.filter(pl.col(TIMESTAMP).dt.date().is_in(newest))


def macro_f1(labels: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...]) -> float:
    """Macro-F1 over ``classes``; a class neither present nor predicted scores 0 (as sklearn's
    with ``zero_division=0``)."""
    return _macro_f1_codes(_codes(labels, classes), _codes(predicted, classes), len(classes))


def _codes(values: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index.get(v, -1) for v in values], dtype=np.int64)


def _macro_f1_codes(truth: np.ndarray, guess: np.ndarray, k: int) -> float:
    """From counts, fast enough to bootstrap hundreds of times."""
    if not len(truth):
        return 0.0
    hits = np.bincount(truth[(truth == guess) & (truth >= 0)], minlength=k)
    support = np.bincount(truth[truth >= 0], minlength=k) + np.bincount(guess[guess >= 0], minlength=k)
    return float(np.mean(np.where(support > 0, 2 * hits / np.maximum(support, 1), 0.0)))


def bootstrap_difference(truth: np.ndarray, first: np.ndarray, second: np.ndarray, k: int, quantile: float,
                         rounds: int = 400) -> float:
    """The ``quantile`` of macro-F1(first) - macro-F1(second) over paired bootstrap resamples of the rows."""
    rng = np.random.default_rng(0)
    differences = []
    for _ in range(rounds):
        i = rng.integers(0, len(truth), len(truth))
        differences.append(_macro_f1_codes(truth[i], first[i], k) - _macro_f1_codes(truth[i], second[i], k))
    return float(np.quantile(differences, quantile))


def quality_gate(student_macro_f1: dict[str, float], spec: GateSpec) -> Gate:
    """The floor against a broken model, met on any of the rows scored (``student_macro_f1``: which
    rows, the shipped student's macro-F1 on them). After a change of the label rule both the whole
    test split and the rows since the change are scored: the whole split is mostly of the rule that
    ended, where a fix for a rule that came back read 0.47-0.50 against a floor of 0.5 (and 0.87 on
    the rows since the change), and the change's first few dozen rows alone can read low by chance."""
    best = max(student_macro_f1.values())
    scored = ", ".join(f"{value:.3f} on {rows}" for rows, value in student_macro_f1.items())
    return Gate("quality_floor", best >= spec.min_macro_f1, f"student macro-F1 {scored} (floor {spec.min_macro_f1})",
                {"macro_f1": best, "floor": spec.min_macro_f1})


def regression_gate(rows: pl.DataFrame, candidate: Predictor, production: Predictor | None,
                    classes: tuple[str, ...], spec: GateSpec) -> Gate:
    """The candidate against production on the same newest labelled rows. It fails only when the
    candidate is worse beyond the tolerance with the configured confidence (a paired bootstrap of
    the macro-F1 difference): the newest days carry few labels, as they come back late, and
    macro-F1 on a few hundred rows moves by points between two equally good models."""
    truth, challenger = _codes(rows[LABEL].to_numpy(), classes), _codes(candidate(rows), classes)
    metadata = {"rows": rows.height, "candidate_macro_f1": _macro_f1_codes(truth, challenger, len(classes))}
    if production is None or not rows.height:
        return Gate("no_regression", True, "no production model or no labelled rows to compare on", metadata)
    champion = _codes(production(rows), classes)
    metadata["production_macro_f1"] = _macro_f1_codes(truth, champion, len(classes))
    upper = bootstrap_difference(truth, challenger, champion, len(classes), spec.regression_confidence)
    return Gate("no_regression", upper >= -spec.max_regression,
                f"candidate {metadata['candidate_macro_f1']:.3f} vs production {metadata['production_macro_f1']:.3f} "
                f"macro-F1 on {rows.height} newest test rows; the difference is at most {upper:+.3f} with "
                f"{spec.regression_confidence:.0%} confidence (fails below -{spec.max_regression})",
                {**metadata, "difference_upper_bound": upper, "tolerance": spec.max_regression})


def single_row_latency_us(package: Path, public_key: Path, rows: pl.DataFrame, calls: int = 2000) -> float:
    """Median time to predict one raw row with the package's default model through the edge
    runtime, after verifying it as a device does (one thread)."""
    return row_latency_us(EdgeModel(package, trusted_public_key(public_key)), rows, calls)


def row_latency_us(model: OnnxModel, rows: pl.DataFrame, calls: int) -> float:
    """Median time of ``model.predict_row`` over ``calls`` calls cycling through ``rows`` (raw), after
    a warm-up: the first calls allocate."""
    records = rows.select(model.feature_order).to_dicts()
    for record in records[:50]:
        model.predict_row(record)
    timings = []
    for i in range(calls):
        started = time.perf_counter_ns()
        model.predict_row(records[i % len(records)])
        timings.append(time.perf_counter_ns() - started)
    return statistics.median(timings) / 1000


def int8_gate(comparison: Comparison, n_classes: int, spec: GateSpec) -> Gate:
    """int8 against fp32 on the validation rows. Like the regression gate, it fails only when int8 is
    worse beyond ``max_int8_drop`` with the configured confidence (paired bootstrap): on a few hundred
    rows one flipped prediction of a rare class moves macro-F1 by several points."""
    upper = bootstrap_difference(comparison.labels, comparison.int8_predicted, comparison.fp32_predicted,
                                 n_classes, spec.regression_confidence)
    drop = comparison.fp32_macro_f1 - comparison.int8_macro_f1
    return Gate("int8_accuracy", upper >= -spec.max_int8_drop,
                f"int8 macro-F1 {comparison.int8_macro_f1:.4f} against fp32 {comparison.fp32_macro_f1:.4f} on "
                f"{comparison.rows} validation rows; at {spec.regression_confidence:.0%} confidence int8 loses at most "
                f"{max(-upper, 0):.4f} (tolerance {spec.max_int8_drop})",
                {"rows": comparison.rows, "fp32_macro_f1": comparison.fp32_macro_f1, "int8_macro_f1": comparison.int8_macro_f1,
                 "macro_f1_drop": drop, "confident_drop": max(-upper, 0.0), "argmax_agreement": comparison.argmax_agreement,
                 "max_drop": spec.max_int8_drop})


def package_gate(package_bytes: int, latency_us: float, spec: GateSpec) -> Gate:
    passed = package_bytes <= spec.max_package_bytes and latency_us <= spec.max_latency_us
    return Gate("package_budget", passed,
                f"package {package_bytes} bytes (budget {spec.max_package_bytes}), single-row median "
                f"{latency_us:.1f} µs (budget {spec.max_latency_us:g})",
                {"bytes": package_bytes, "latency_us": latency_us, "max_bytes": spec.max_package_bytes,
                 "max_latency_us": spec.max_latency_us})


def canary_sites(sites: list[str], fraction: float, version: str) -> tuple[str, ...]:
    """A ``fraction`` of the sites (at least one, never all), chosen by a hash of the version: the
    same version always picks the same sites, and successive versions do not always test on one."""
    count = min(len(sites) - 1, max(1, round(fraction * len(sites))))
    ranked = sorted(sites, key=lambda site: hashlib.sha256(f"{version}/{site}".encode()).hexdigest())
    return tuple(sorted(ranked[:count]))


def take_over_canary(running: Canary | None, running_change_day: str | None, version: str, change_day: str | None,
                     sites: tuple[str, ...], day: str) -> Canary | None:
    """The running gray release handed to ``version`` (trained through ``day``) when both are
    retrains for a change of the label rule and ``version`` would not start on more sites. Started anew, each
    such retrain pulled the fleet back: the follow-ups of a change come 1, 2 and 4 days after it, each
    inside the last one's 2-day window, so the canary never concluded, and on the simulator's
    roll-out a follow-up on one site replaced a fix serving three, which fell back to the old model
    (0.817 the next day against 0.942 for a nightly retrain). The sites and the window go on; the
    verdict counts the rows served after ``day``, which the new version never trained on."""
    if running is None or change_day is None or running_change_day is None or len(sites) > len(running.sites):
        return None
    return replace(running, version=version, trained_through=day)


@dataclass(frozen=True)
class CanaryVerdict:
    version: str
    day: dt.date
    days_observed: int
    canary_rows: int
    canary_accuracy: float
    control_rows: int
    control_accuracy: float
    verdict: str
    reason: str
    candidate_accuracy: float = float("nan")
    """The new version on every labelled row served since the release, all sites (what the verdict weighs)."""
    production_accuracy: float = float("nan")
    """Production on those same rows."""


def judge_canary(day: dt.date, canary: Canary, labelled: pl.DataFrame, canary_model: Predictor,
                 control_model: Predictor, spec: CanarySpec) -> CanaryVerdict:
    """The new version against production on the labels that came back for readings since the gray
    release began. Each arm's accuracy on the rows it served is reported, but the verdict scores both
    models on every one of those rows, paired: the arms are different sites, which differ by up to 11
    points under one model on the simulator, so arm against arm a candidate on an easy site looked
    better and one on a hard site was rolled back for the site. Pending until the window is over
    and each arm has ``min_labels``; then roll out unless the new version is worse by more than the
    tolerance. Earlier, inside the window or after it, once the canary has served ``EARLY_MIN_ROWS``
    labelled rows, it rolls out when surely better by ``early_margin`` (``_early_lower_bound``)."""
    served = labelled.filter(pl.col(TIMESTAMP).dt.date().is_between(canary.judged_from, day))
    on_canary = pl.col(SITE).is_in(list(canary.sites))
    arms = {name: served.filter(mask) for name, mask in (("canary", on_canary), ("control", ~on_canary))}
    accuracy = {name: _accuracy(rows, model) for (name, rows), model in zip(arms.items(), (canary_model, control_model))}
    observed = max(0, (day - canary.first_day).days + 1)
    n = {name: rows.height for name, rows in arms.items()}
    truth = served[LABEL].to_numpy()
    candidate_right, production_right = canary_model(served) == truth, control_model(served) == truth
    early = _early_lower_bound(candidate_right, production_right, n["canary"], spec) if day >= canary.first_day else None
    verdict, reason = _verdict(day, canary, n, accuracy, (_mean(candidate_right), _mean(production_right)), early, spec)
    return CanaryVerdict(canary.version, day, observed, n["canary"], accuracy["canary"], n["control"],
                         accuracy["control"], verdict, reason, _mean(candidate_right), _mean(production_right))


def estimate_arms(day: dt.date, canary: Canary, features: pl.DataFrame, canary_model: Calibrated,
                  control_model: Calibrated, band_z: float) -> dict[str, Estimate]:
    """Each arm's accuracy estimated without labels (``pipeline.estimation``), on every row it served
    since the gray release began: what the verdict will likely be while the labels are pending."""
    served = features.filter(pl.col(TIMESTAMP).dt.date().is_between(canary.judged_from, day))
    on_canary = pl.col(SITE).is_in(list(canary.sites))
    return {name: estimate(model(rows) if rows.height else np.empty((0, 0)), band_z)
            for name, rows, model in (("canary", served.filter(on_canary), canary_model),
                                      ("control", served.filter(~on_canary), control_model))}


EARLY_Z, EARLY_MIN_ROWS = 2.326, 20
"""One-sided 99% normal bound, and the fewest labelled rows it is trusted on (those the canary served;
for a fix's share of the sites, test rows since the change)."""


@dataclass(frozen=True)
class GrayRelease:
    """The share of sites a released candidate serves first, and why."""

    fraction: float
    reason: str


def gray_release(spec: CanarySpec, training_set: pl.DataFrame, change_day: dt.date | None, candidate: Predictor,
                 production: Predictor) -> GrayRelease:
    """``spec.fraction`` of the sites, unless the candidate fixes a confirmed change of the label rule
    (on ``change_day``) and is already more accurate than production on the held-out rows since it
    (``spec.fix_judged_on``) by ``spec.fix_z`` standard errors: then ``spec.fix_fraction``. The
    held-out rows are devices neither model trained on, from the days the canary would judge. The
    bar is "surely better", not the early roll-out's margin: the control sites and the verdict
    remain, and on the simulator's roll-out the few test devices with the new firmware (24-91 rows
    since the change) never cleared a 0.05 margin at 99%, while holding three quarters of the fleet
    on a production known wrong cost 1-2 days of recovery on most sites."""
    usual = GrayRelease(spec.fraction, f"a canary on {spec.fraction:.0%} of the sites")
    if change_day is None or spec.fix_fraction is None:
        return usual
    since_change = training_set.filter(pl.col(SPLIT).is_in(list(spec.fix_judged_on)) & (pl.col(TIMESTAMP).dt.date() >= change_day))
    judged = f"{since_change.height} {' and '.join(spec.fix_judged_on)} rows since the change"
    if since_change.height < EARLY_MIN_ROWS:
        return GrayRelease(spec.fraction, f"{usual.reason}: {judged} of the label rule (a fix needs {EARLY_MIN_ROWS} to be judged)")
    truth = since_change[LABEL].to_numpy()
    lower = paired_gain_lower_bound(candidate(since_change) == truth, production(since_change) == truth, spec.fix_z)
    confidence = f"{spec.fix_z} standard errors"
    if lower <= 0:
        return GrayRelease(spec.fraction, f"{usual.reason}: on the {judged} its accuracy gain over production is at least "
                                          f"{lower:.3f} at {confidence}, not surely above 0")
    return GrayRelease(spec.fix_fraction, f"a fix on {spec.fix_fraction:.0%} of the sites: on the {judged} of the label rule "
                                          f"it is more accurate than production by at least {lower:.3f} at {confidence}; "
                                          f"production keeps the rest as control")


def _early_lower_bound(candidate_right: np.ndarray, production_right: np.ndarray, canary_rows: int,
                       spec: CanarySpec) -> float | None:
    """The 99% lower bound of the new version's accuracy gain over production on the served rows
    (paired), when it clears ``early_margin``: a canary that fixes what production gets wrong need
    not wait out its window. Paired, a one-site canary of a fix 13 points ahead clears it on its
    first day's labels; arm against arm (45 canary labels) it did not, and the fleet waited two days."""
    if spec.early_margin is None or canary_rows < EARLY_MIN_ROWS:
        return None
    lower = paired_gain_lower_bound(candidate_right, production_right, EARLY_Z)
    return lower if lower >= spec.early_margin else None


def _mean(hits: np.ndarray) -> float:
    return float(hits.mean()) if len(hits) else float("nan")


def _accuracy(rows: pl.DataFrame, model: Predictor) -> float:
    return float((model(rows) == rows[LABEL].to_numpy()).mean()) if rows.height else 0.0


def _verdict(day: dt.date, canary: Canary, n: dict[str, int], accuracy: dict[str, float], paired: tuple[float, float],
             early: float | None, spec: CanarySpec) -> tuple[str, str]:
    enough = min(n.values()) >= spec.min_labels
    candidate, production = paired
    summary = (f"on all {sum(n.values())} labelled rows served since the release, new version {candidate:.3f} vs production "
               f"{production:.3f} (as served: canary {accuracy['canary']:.3f} on {n['canary']} labels, control "
               f"{accuracy['control']:.3f} on {n['control']})")
    if early is not None:
        return ROLL_OUT, f"{summary}: better by at least {early:.3f} with 99% confidence (early roll-out margin {spec.early_margin})"
    if day < canary.last_day:
        return PENDING, f"canary window runs to {canary.last_day}"
    if not enough:
        return PENDING, f"too few returned labels to judge ({n['canary']} canary, {n['control']} control; need {spec.min_labels} each)"
    if production - candidate > spec.tolerance:
        return ROLL_BACK, f"{summary}: worse by {production - candidate:.3f} (tolerance {spec.tolerance})"
    return ROLL_OUT, f"{summary}: within tolerance {spec.tolerance}"
