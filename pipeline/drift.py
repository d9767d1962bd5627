"""Drift detection: has the world moved away from what the production model was fitted to?

Three questions, one table (a row per test):
- data drift: each model input of today against the production model's reference rows (KS for
  numeric, chi-squared for categorical, corrected for testing many features at once), and
  against yesterday, to tell a world still moving from one that has settled;
- prediction drift: the distribution of the model's predicted classes;
- concept drift: the model's accuracy on freshly returned labels against its test accuracy, with
  a one-sided test, which catches a new label rule even when the inputs look the same; overall and
  in every slice (a site, a category of an input), since a rule that changes for one firmware is
  diluted by the rest of the fleet in the overall figure.

A test only counts when its effect size also clears a floor (KS statistic, population stability
index, accuracy drop): with thousands of rows a day every trivial shift is significant. With few rows
a day the opposite holds: the newest days since the model was trained are pooled until a test has
its minimum of rows (``min_rows``, ``min_labels``), and a test that still has not is reported as not
tested (``tested`` false, no p-value), never as a p-value of 1 that reads "not drifted".

The statistics come from a ``Detector``: alibi-detect by default, scipy by configuration. alibi-detect
is BSL-licensed and slow to import, so it is imported only when its detector is built.
"""

import datetime as dt
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, cast

import numpy as np
import polars as pl
from scipy import stats

from pipeline.dataset import LABEL, ROW_ID, TIMESTAMP, ConceptDriftSpec, DataDriftSpec, DatasetConfig
from pipeline.labels import ARRIVED_ON, unbiased

NUMERIC, CATEGORICAL, PREDICTION, CONCEPT, STABILITY = "numeric", "categorical", "prediction", "concept", "stability"
CONCEPT_SLICE = "concept slice"
"""Fresh-label accuracy of one slice ("column=value") against its test accuracy (``slice_concept_drift``);
only slices with ``min_slice_labels`` are reported, so these rows are always tested."""
PREDICTION_TEST, CONCEPT_TEST, STABILITY_TEST = "predicted class", "fresh-label accuracy", "inputs vs previous day"
ESTIMATE, ATTRIBUTION, LOSS_SLICE = "estimate", "attribution", "loss slice"
"""Kinds of rows that are not tests: the estimated performance (``pipeline.estimation``) and the
causes (``pipeline.causes``); they never count as untested."""
TESTS = (NUMERIC, CATEGORICAL, PREDICTION, CONCEPT, STABILITY)
ESTIMATED_ACCURACY_TEST, ESTIMATED_F1_TEST = "estimated accuracy", "estimated macro-F1"
FIELD_PREDICTION_TEST = "predicted class (devices)"
"""The classes the devices themselves reported over MQTT, whatever version each one runs."""
DAY, PRODUCTION_VERSION = "day", "production_version"
REPORT_SCHEMA = {
    DAY: pl.Date, PRODUCTION_VERSION: pl.String, "test": pl.String, "kind": pl.String, "statistic": pl.Float64, "p_value": pl.Float64, "p_adjusted": pl.Float64,
    "effect": pl.Float64, "floor": pl.Float64, "drifted": pl.Boolean, "n_reference": pl.Int64, "n_current": pl.Int64,
    "reference_value": pl.Float64, "current_value": pl.Float64, "tested": pl.Boolean, "days": pl.Int64, "min_n": pl.Int64,
    "low": pl.Float64, "high": pl.Float64,
}
"""``low``, ``high``: the band of an estimate (its sampling error; null for the tests).
``tested``: false when the test lacked rows (``n_current`` or ``n_reference`` below ``min_n``, even after pooling);
``days``: how many days the current rows (or fresh labels) were pooled from."""
_PSI_EPSILON = 1e-4


class Detector(Protocol):
    """Two-sample tests: (statistic, p-value) of reference against current."""

    name: str

    def numeric(self, reference: np.ndarray, current: np.ndarray) -> tuple[float, float]: ...

    def categorical(self, reference: np.ndarray, current: np.ndarray, n_categories: int) -> tuple[float, float]: ...


class ScipyDetector:
    """Kolmogorov-Smirnov and chi-squared from scipy (BSD licence)."""

    name = "scipy"

    def numeric(self, reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
        result = stats.ks_2samp(reference, current)
        return float(result.statistic), float(result.pvalue)

    def categorical(self, reference: np.ndarray, current: np.ndarray, n_categories: int) -> tuple[float, float]:
        table = np.stack([np.bincount(reference, minlength=n_categories), np.bincount(current, minlength=n_categories)])
        statistic, p_value, _, _ = stats.chi2_contingency(table)
        return float(statistic), float(p_value)


class AlibiDetector:
    """alibi-detect's ``KSDrift`` and ``ChiSquareDrift``, one feature at a time (the correction for
    many features is applied over all of them together, in ``data_drift``)."""

    name = "alibi"

    def __init__(self):
        with warnings.catch_warnings():  # its torch backend still uses torch.jit.script
            warnings.simplefilter("ignore", DeprecationWarning)
            from alibi_detect.cd import ChiSquareDrift, KSDrift
        self._ks, self._chi2 = KSDrift, ChiSquareDrift

    # alibi's own p_val threshold is unused: only its statistic and p-value are read, and the
    # threshold is applied after the correction over all features.
    def numeric(self, reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
        detector = self._ks(reference.astype(np.float32)[:, None], p_val=0.05)
        return _alibi_result(detector.predict(current.astype(np.float32)[:, None], return_p_val=True, return_distance=True))

    def categorical(self, reference: np.ndarray, current: np.ndarray, n_categories: int) -> tuple[float, float]:
        detector = self._chi2(reference[:, None], p_val=0.05, categories_per_feature={0: n_categories})
        return _alibi_result(detector.predict(current[:, None], return_p_val=True, return_distance=True))


def _alibi_result(prediction: dict) -> tuple[float, float]:
    return float(prediction["data"]["distance"][0]), float(prediction["data"]["p_val"][0])


def monitored_features(config: DatasetConfig) -> tuple[list[str], list[str]]:
    """The dataset's own features (numeric, categorical). Derived ones are not tested: a delta against
    a device's last days follows its feature with a lag, and would raise a settled drift again."""
    return [f.name for f in config.numeric_features], [f.name for f in config.categorical_features]


def make_detector(name: str) -> Detector:
    return AlibiDetector() if name == "alibi" else ScipyDetector()


def psi(reference: np.ndarray, current: np.ndarray, n_categories: int) -> float:
    """Population stability index of two code arrays over ``n_categories``."""
    r = np.bincount(reference, minlength=n_categories) / max(len(reference), 1) + _PSI_EPSILON
    c = np.bincount(current, minlength=n_categories) / max(len(current), 1) + _PSI_EPSILON
    return float(np.sum((c - r) * np.log(c / r)))


def _codes(reference: pl.Series, current: pl.Series) -> tuple[np.ndarray, np.ndarray, int]:
    """Both samples coded over the categories present in either (a category absent from both would
    make chi-squared's expected table zero); missing values are a category of their own."""
    ref, cur = reference.cast(pl.String).fill_null("<missing>"), current.cast(pl.String).fill_null("<missing>")
    vocabulary = {v: i for i, v in enumerate(sorted(set(ref.unique()) | set(cur.unique())))}
    return (ref.replace_strict(vocabulary, return_dtype=pl.Int64).to_numpy(),
            cur.replace_strict(vocabulary, return_dtype=pl.Int64).to_numpy(), len(vocabulary))


def _finite(series: pl.Series) -> np.ndarray:
    values = series.cast(pl.Float64).to_numpy()
    return values[np.isfinite(values)]


def _enough(n_reference: int, n_current: int, spec: DataDriftSpec) -> bool:
    return min(n_reference, n_current) >= spec.min_rows


def _numeric_row(name: str, reference: pl.Series, current: pl.Series, spec: DataDriftSpec, detector: Detector) -> dict:
    ref, cur = _finite(reference), _finite(current)
    statistic, p_value = detector.numeric(ref, cur) if _enough(len(ref), len(cur), spec) else (None, None)
    return {"test": name, "kind": NUMERIC, "statistic": statistic, "p_value": p_value, "effect": statistic,
            "floor": spec.ks_floor, "n_reference": len(ref), "n_current": len(cur), "min_n": spec.min_rows,
            "reference_value": float(np.median(ref)) if len(ref) else None,
            "current_value": float(np.median(cur)) if len(cur) else None}


def _categorical_row(name: str, kind: str, reference: pl.Series, current: pl.Series, spec: DataDriftSpec,
                     detector: Detector) -> dict:
    ref, cur, n = _codes(reference, current)
    tested = _enough(len(ref), len(cur), spec)
    statistic, p_value = (detector.categorical(ref, cur, n) if n > 1 else (0.0, 1.0)) if tested else (None, None)
    return {"test": name, "kind": kind, "statistic": statistic, "p_value": p_value, "effect": psi(ref, cur, n) if tested else None,
            "floor": spec.psi_floor, "n_reference": len(ref), "n_current": len(cur), "min_n": spec.min_rows}


def _adjust(p_values: np.ndarray, correction: str) -> np.ndarray:
    """Corrected for the tests that ran (NaN: not tested, stays NaN)."""
    tested = np.isfinite(p_values)
    adjusted = np.full(len(p_values), np.nan)
    if not tested.any():
        return adjusted
    ran = p_values[tested]
    adjusted[tested] = stats.false_discovery_control(ran, method="bh") if correction == "fdr" else np.minimum(ran * len(ran), 1.0)
    return adjusted


def data_drift(reference: pl.DataFrame, current: pl.DataFrame, numeric: list[str], categorical: list[str],
               spec: DataDriftSpec, detector: Detector) -> pl.DataFrame:
    """One row per model input; ``drifted`` when the corrected p-value and the effect floor agree."""
    rows = [_numeric_row(n, reference[n], current[n], spec, detector) for n in numeric]
    rows += [_categorical_row(n, CATEGORICAL, reference[n], current[n], spec, detector) for n in categorical]
    table = pl.DataFrame(rows, schema={k: REPORT_SCHEMA[k] for k in rows[0]} if rows else None)
    adjusted = _adjust(table["p_value"].cast(pl.Float64).to_numpy(), spec.correction) if rows else np.array([])
    return _finish(table.with_columns(pl.Series("p_adjusted", adjusted, dtype=pl.Float64).fill_nan(None)), spec.p_value)


def prediction_drift(reference: np.ndarray, current: np.ndarray, classes: tuple[str, ...], spec: DataDriftSpec,
                     detector: Detector, test: str = PREDICTION_TEST) -> pl.DataFrame:
    """The predicted classes (argmax codes) of the reference rows against today's."""
    names = np.asarray(classes)
    row = _categorical_row(test, PREDICTION, pl.Series(names[reference]), pl.Series(names[current]), spec, detector)
    row["p_adjusted"] = row["p_value"]
    return _finish(pl.DataFrame([row], schema={k: REPORT_SCHEMA[k] for k in row}), spec.p_value)


def more_errors_than_reference(errors: int, n: int, reference_accuracy: float, reference_rows: int) -> float:
    """One-sided p-value that the fresh rows' error rate exceeds the reference's. The reference
    accuracy is itself measured, on ``reference_rows`` test rows: Fisher's exact test on the two
    samples keeps a lucky test split (the simulator's replays had versions 3 points above their true
    accuracy) from making ordinary days look like a drop, which a binomial test against the figure,
    taken as exact, did on 3 of 12 stationary days. Without the rows (older versions): that binomial test."""
    if reference_rows <= 0:
        return float(stats.binomtest(errors, n, 1 - reference_accuracy, alternative="greater").pvalue)
    reference_errors = round((1 - reference_accuracy) * reference_rows)
    table = [[errors, n - errors], [reference_errors, reference_rows - reference_errors]]
    return float(stats.fisher_exact(table, alternative="greater").pvalue)


def concept_drift(correct: np.ndarray, reference_accuracy: float, reference_rows: int, spec: ConceptDriftSpec,
                  days: int = 1) -> pl.DataFrame:
    """Accuracy on fresh labels (of ``days`` pooled days) against the model's test accuracy: a
    one-sided test of the error count (``more_errors_than_reference``), and an accuracy-drop floor.
    Fewer than ``min_labels`` fresh labels: not tested (no p-value; the accuracy is still shown)."""
    n = int(len(correct))
    accuracy = float(np.mean(correct)) if n else None
    tested = n >= spec.min_labels
    p_value = more_errors_than_reference(int(n - correct.sum()), n, reference_accuracy, reference_rows) if tested else None
    drop = reference_accuracy - accuracy if accuracy is not None else 0.0
    row = {"test": CONCEPT_TEST, "kind": CONCEPT, "statistic": accuracy, "p_value": p_value, "p_adjusted": p_value,
           "effect": drop, "floor": spec.min_accuracy_drop, "n_reference": reference_rows, "n_current": n,
           "reference_value": reference_accuracy, "current_value": accuracy, "tested": tested, "days": days,
           "min_n": spec.min_labels}
    return _finish(pl.DataFrame([row], schema={k: REPORT_SCHEMA[k] for k in row}), spec.p_value)


SliceAccuracy = dict[str, dict[str, dict[str, float]]]
"""Per slicing column, per value: the test split's ``accuracy`` and ``rows`` (``evaluation.slice_metrics``)."""


def slice_concept_drift(fresh: pl.DataFrame, correct: np.ndarray, reference: SliceAccuracy, overall_accuracy: float,
                        overall_rows: int, spec: ConceptDriftSpec, days: int = 1) -> pl.DataFrame:
    """The concept test in every slice of the fresh labels with ``min_slice_labels``: a slice has
    fallen when its fresh labels are worse than both the whole test split and the slice's own test
    rows (the larger of the two p-values; a value the test split never had: the whole split's
    only), with Bonferroni's correction over the slices tested. Why per slice: on the simulator's
    firmware roll-out the new firmware's rows fell to 0.74 on its first day while the fleet's fresh
    labels read 0.88 against 0.92, not yet significant, and the fix waited a day. Why both: each
    figure alone can be lucky. The sites alone range from 0.84 to 0.95 on one version's test rows,
    and a harder site is not a changed rule; a slice's test rows can be a few devices that happen
    to be easy (the split is by device): one device model's 1.000 made an ordinary 0.885 a false
    alarm. And the whole split can be the lucky one: a version's 0.946 on 478 test rows, 0.952 on
    its 146 rows of firmware 3.0.9, served that firmware at 0.90 (all its rows, the simulator's
    truth); against the whole split alone, its ordinary 0.871 on 224 fresh labels raised a concept
    alarm on three stationary days in a row."""
    if spec.min_slice_labels is None or not fresh.height:
        return empty_report()
    rows = []
    for column, values in reference.items():
        if column not in fresh.columns:
            continue
        named = pl.col(column).cast(pl.String).fill_null("None")  # as evaluation.slice_metrics names a null
        counts = (fresh.select(named.alias("value")).with_columns(pl.Series("ok", correct))
                  .group_by("value").agg(pl.len().alias("n"), pl.col("ok").sum().alias("right")))
        if counts.height < 2 and len(values) < 2:
            continue  # one value everywhere: the overall test
        for value, n, right in counts.iter_rows():
            if n < spec.min_slice_labels:
                continue
            own = values.get(value)
            references = [(overall_accuracy, overall_rows)] + ([(own["accuracy"], int(own["rows"]))] if own else [])
            p_value, accuracy, reference_rows = max((more_errors_than_reference(n - right, n, figure, count), figure, count)
                                                    for figure, count in references)
            rows.append({"test": f"{column}={value}", "kind": CONCEPT_SLICE, "statistic": right / n, "p_value": p_value,
                         "effect": accuracy - right / n, "floor": spec.min_accuracy_drop, "n_reference": reference_rows,
                         "n_current": n, "reference_value": accuracy, "current_value": right / n, "days": days,
                         "min_n": spec.min_slice_labels})
    if not rows:
        return empty_report()
    table = pl.DataFrame(rows, schema={k: REPORT_SCHEMA[k] for k in rows[0]})
    table = table.with_columns(pl.Series("p_adjusted", _adjust(table["p_value"].to_numpy(), "bonferroni")))
    return _finish(table, spec.p_value)


def stability(previous: pl.DataFrame | None, current: pl.DataFrame, numeric: list[str], categorical: list[str],
              spec: DataDriftSpec, detector: Detector) -> pl.DataFrame:
    """One row: how many inputs drifted since the previous day (none: the world has settled)."""
    n_previous = 0 if previous is None else previous.height
    tested = _enough(n_previous, current.height, spec)
    drifted = int(data_drift(previous, current, numeric, categorical, spec, detector)["drifted"].sum()) if tested and previous is not None else 0
    row = {"test": STABILITY_TEST, "kind": STABILITY, "statistic": float(drifted) if tested else None, "drifted": drifted > 0,
           "n_reference": n_previous, "n_current": current.height, "tested": tested, "min_n": spec.min_rows}
    return _finish(pl.DataFrame([row], schema={k: REPORT_SCHEMA[k] for k in row}), spec.p_value)


def report_rows(rows: list[dict]) -> pl.DataFrame:
    """Rows that are not tests (estimates, causes; ``drifted`` and ``tested`` given) in the report's columns."""
    if not rows:
        return empty_report()
    return _finish(pl.DataFrame(rows, schema={k: REPORT_SCHEMA[k] for k in rows[0]}), 0.0)


def _finish(table: pl.DataFrame, p_value: float) -> pl.DataFrame:
    """Fill the report's columns; ``drifted`` = significant after correction and above the floor;
    a row without a p-value was not tested (and did not drift)."""
    if "tested" not in table.columns:
        table = table.with_columns(pl.col("p_adjusted").is_not_null().alias("tested"))
    if "drifted" not in table.columns:
        table = table.with_columns(((pl.col("p_adjusted") < p_value) & (pl.col("effect") >= pl.col("floor"))).fill_null(False).alias("drifted"))
    missing = [pl.lit(None, dtype=dtype).alias(name) for name, dtype in REPORT_SCHEMA.items() if name not in table.columns]
    return table.with_columns(missing).select([pl.col(n).cast(t) for n, t in REPORT_SCHEMA.items()])


def empty_report() -> pl.DataFrame:
    """The report of a day with no production model to judge."""
    return pl.DataFrame(schema=REPORT_SCHEMA)


@dataclass(frozen=True)
class DriftSummary:
    """What the retraining policy and the UI need of one day's report."""

    data_drift: bool = False
    drifted_features: list[str] = field(default_factory=list)
    max_effect_ratio: float = 0.0
    """The largest effect size as a multiple of its floor, over the inputs: comparable across KS and PSI."""
    prediction_drift: bool = False
    concept_drift: bool = False
    concept_slices: list[str] = field(default_factory=list)
    """The slices whose fresh labels fell (``slice_concept_drift``), as "column=value (accuracy on n labels
    against the bar it was held to)"; a concept alarm raised by a slice alone has the overall test quiet."""
    fresh_labels: int = 0
    fresh_accuracy: float | None = None
    reference_accuracy: float | None = None
    accuracy_drop: float = 0.0
    """The overall drop, or a drifted slice's when larger: what decides whether the rule changed."""
    settled: bool = True
    severity: float = 0.0
    untested: list[str] = field(default_factory=list)
    """Tests that lacked rows even after pooling, each as "name (n < min)": no evidence either way."""
    concept_tested: bool = True
    estimated_accuracy: float | None = None
    """The day's accuracy estimated without labels (``pipeline.estimation``); None: none was made."""
    estimated_low: float | None = None
    estimated_high: float | None = None
    estimate_reliable: bool = False
    """False when no estimate was made or the day's inputs left the region the reference covers."""
    estimated_harm: bool = False
    """A reliable estimate whose band lies below the reference accuracy beyond the tolerance."""

    @property
    def alarm(self) -> bool:
        return self.data_drift or self.prediction_drift or self.concept_drift or self.estimated_harm

    @property
    def covariate_only(self) -> bool:
        """An alarm on the inputs or the predictions alone, no fresh-label evidence of a new rule."""
        return (self.data_drift or self.prediction_drift) and not self.concept_drift


def untested(report: pl.DataFrame) -> list[str]:
    """The report's tests that did not run, as "test (n < min)"."""
    rows = report.filter(pl.col("tested").not_() & pl.col("kind").is_in(TESTS)) if "tested" in report.columns else report.clear()
    def short(r: dict) -> int:  # the sample that fell short: today's (pooled) rows, else the reference
        return r["n_current"] if r["kind"] == CONCEPT or (r["n_current"] or 0) < r["min_n"] else r["n_reference"] or 0

    return [f"{r['test']} (n {short(r)} < {r['min_n']})" for r in rows.iter_rows(named=True)]


def summarise(report: pl.DataFrame, n_features: int, full_retrain_drop: float) -> DriftSummary:
    """Flags, numbers and a severity in [0, 1]: data drift counts up to 0.5 (by the share of inputs
    that drifted), prediction drift 0.3, concept drift up to 1 (the accuracy drop against the drop
    that calls for a full retrain): only returned labels can say the model is wrong, or an estimate
from calibrated probabilities that reads a drop beyond its band (counted as that drop would be)."""
    inputs = report.filter(pl.col("kind").is_in([NUMERIC, CATEGORICAL]))
    drifted = inputs.filter(pl.col("drifted"))["test"].to_list()
    ratios = (inputs["effect"] / inputs["floor"].replace(0.0, None)).drop_nulls()
    prediction = report.filter(pl.col("kind") == PREDICTION)
    concept = report.filter(pl.col("kind") == CONCEPT)
    settled_rows = report.filter(pl.col("kind") == STABILITY)
    concept_row = concept.row(0, named=True) if concept.height else {}
    estimated = report.filter((pl.col("kind") == ESTIMATE) & (pl.col("test") == ESTIMATED_ACCURACY_TEST))
    estimate_row = estimated.row(0, named=True) if estimated.height else {}
    harm = bool(estimate_row.get("drifted"))
    fallen = report.filter((pl.col("kind") == CONCEPT_SLICE) & pl.col("drifted")).sort("effect", descending=True)
    concept_drift = bool(concept_row.get("drifted")) or bool(fallen.height)
    drop = max([float(concept_row.get("effect") or 0.0), *fallen["effect"].to_list()])
    severity = max(
        0.5 * min(1.0, 4 * len(drifted) / max(n_features, 1)) if drifted else 0.0,
        0.3 if prediction["drifted"].any() else 0.0,
        min(1.0, drop / full_retrain_drop) if concept_drift else 0.0,
        min(1.0, float(estimate_row["effect"]) / full_retrain_drop) if harm else 0.0,
    )
    return DriftSummary(
        data_drift=bool(drifted), drifted_features=drifted,
        max_effect_ratio=float(cast(float, ratios.max())) if len(ratios) else 0.0,  # polars types a max as any literal
        prediction_drift=bool(prediction["drifted"].any()),
        concept_drift=concept_drift,
        concept_slices=[f"{r['test']} ({r['current_value']:.3f} on {r['n_current']} labels against "
                        f"{r['reference_value']:.3f})" for r in fallen.iter_rows(named=True)],
        fresh_labels=int(concept_row.get("n_current") or 0),
        fresh_accuracy=concept_row.get("current_value"), reference_accuracy=concept_row.get("reference_value"),
        accuracy_drop=drop, settled=not (settled_rows.height and settled_rows["drifted"][0]), severity=round(severity, 4),
        untested=untested(report), concept_tested=bool(concept_row.get("tested", True)) if concept.height else True,
        estimated_accuracy=estimate_row.get("statistic"), estimated_low=estimate_row.get("low"),
        estimated_high=estimate_row.get("high"), estimate_reliable=bool(estimate_row.get("tested")), estimated_harm=harm,
    )


@dataclass(frozen=True)
class DriftInputs:
    """Everything a day's drift report compares, already loaded."""

    day: dt.date
    production_version: str
    reference: pl.DataFrame
    current: pl.DataFrame
    previous: pl.DataFrame | None
    fresh: pl.DataFrame
    """Rows whose label came back today (joined with their features), not yet seen by the model."""
    reference_accuracy: float
    reference_test_rows: int
    field_predictions: list[str] | None = None
    """The classes devices predicted today and published (landed by the MQTT collector), if any."""
    today: pl.DataFrame | None = None
    """Today's rows alone when ``current`` pools earlier days (stability compares today with yesterday)."""
    current_days: int = 1
    fresh_days: int = 1
    reference_slices: SliceAccuracy = field(default_factory=dict)
    """The production model's test accuracy per slice, for the concept test in each slice."""

    @property
    def todays_rows(self) -> pl.DataFrame:
        return self.current if self.today is None else self.today


def pool_newest(frame: pl.DataFrame, day_of: pl.Expr, day: dt.date, fresh_after: dt.date, minimum: int,
                max_days: int) -> tuple[pl.DataFrame, int]:
    """The rows of ``day``, then of the days before it, newest first, until there are ``minimum``
    rows or ``max_days`` days. Earlier days only count if they come after ``fresh_after`` (the
    newest day the model learned from): older rows are the model's own training data."""
    days = [day] + [d for d in (day - dt.timedelta(days=k) for k in range(1, max_days)) if d > fresh_after]
    counts = dict(frame.group_by(day_of.alias("d")).len().iter_rows())
    taken, rows = [], 0
    for d in days:
        taken.append(d)
        rows += counts.get(d, 0)
        if rows >= minimum:
            break
    return frame.filter(day_of.is_in(taken)), len(taken)


def drift_inputs(day: dt.date, production_version: str, reference: pl.DataFrame, recent_features: pl.DataFrame,
                 gold: pl.DataFrame, trained_through: dt.date, reference_accuracy: float,
                 reference_test_rows: int, field_predictions: list[str] | None = None,
                 drift: DataDriftSpec | None = None, concept: ConceptDriftSpec | None = None,
                 reference_slices: SliceAccuracy | None = None) -> DriftInputs:
    """Today's rows, yesterday's (from ``recent_features``, the last days of features) and the labels
    that arrived today joined with the readings they label (not the label inbox's answers: see
    ``labels.unbiased``). A model trained through day T learned
    from the labels that arrived by T, so every label arriving after T is fresh to it, whatever
    the age of its reading; on T or before, none is. With ``drift`` / ``concept`` given, the rows
    and labels of the newest days after T are pooled with today's until the tests have their
    minimum (``min_rows``, ``min_labels``), over at most ``concept.pool_days`` days; ``gold`` then
    holds the labels that arrived over those days."""
    def on(offset: int) -> pl.DataFrame:
        return recent_features.filter(pl.col(TIMESTAMP).dt.date() == day - dt.timedelta(days=offset))

    max_days = concept.pool_days if concept else 1
    current, current_days = pool_newest(recent_features, pl.col(TIMESTAMP).dt.date(), day, trained_through,
                                        drift.min_rows if drift else 0, max_days)
    labels = unbiased(gold)
    if ARRIVED_ON not in labels.columns:
        labels = labels.with_columns(pl.lit(day).alias(ARRIVED_ON))
    labels, fresh_days = pool_newest(labels, pl.col(ARRIVED_ON), day, trained_through, concept.min_labels if concept else 0, max_days)
    fresh = recent_features.drop(LABEL).join(labels.select(ROW_ID, LABEL), on=ROW_ID, how="inner")
    return DriftInputs(day, production_version, reference, current, on(1), fresh if day > trained_through else fresh.clear(),
                       reference_accuracy, reference_test_rows, field_predictions or None,
                       today=on(0) if current_days > 1 else None, current_days=current_days, fresh_days=fresh_days,
                       reference_slices=reference_slices or {})


def drift_report(inputs: DriftInputs, predict_proba: Callable[[pl.DataFrame], np.ndarray], numeric: list[str],
                 categorical: list[str], classes: tuple[str, ...], drift: DataDriftSpec, concept: ConceptDriftSpec,
                 detector: Detector, explain: Callable[[DriftInputs], list[pl.DataFrame]] | None = None) -> pl.DataFrame:
    """The whole report: inputs, day-over-day stability, predictions (recomputed centrally, and as
    the devices reported them when they publish), fresh-label accuracy, and what ``explain`` adds
    from the same inputs (the estimated performance and the causes, as ``report_rows``)."""
    reference = predict_proba(inputs.reference).argmax(axis=1)
    parts = [
        data_drift(inputs.reference, inputs.current, numeric, categorical, drift, detector),
        prediction_drift(reference, predict_proba(inputs.current).argmax(axis=1), classes, drift, detector),
    ]
    if inputs.field_predictions:
        codes = np.array([classes.index(label) for label in inputs.field_predictions])
        parts.append(prediction_drift(reference, codes, classes, drift, detector, FIELD_PREDICTION_TEST))
    parts = [part.with_columns(pl.lit(inputs.current_days, dtype=pl.Int64).alias("days")) for part in parts]
    parts.append(stability(inputs.previous, inputs.todays_rows, numeric, categorical, drift, detector))
    labels = inputs.fresh[LABEL].to_numpy()
    predicted = np.asarray(classes)[predict_proba(inputs.fresh).argmax(axis=1)] if inputs.fresh.height else np.array([])
    correct = predicted == labels
    parts.append(concept_drift(correct, inputs.reference_accuracy, inputs.reference_test_rows, concept, inputs.fresh_days))
    parts.append(slice_concept_drift(inputs.fresh, correct, inputs.reference_slices, inputs.reference_accuracy,
                                     inputs.reference_test_rows, concept, inputs.fresh_days))
    parts += explain(inputs) if explain else []
    return pl.concat(parts).with_columns(pl.lit(inputs.day).alias(DAY), pl.lit(inputs.production_version).alias(PRODUCTION_VERSION))
