"""Feedback layer: the daily drift report against the production model, and the retraining policy.

Both are cheap enough to run every day in the ingest job; the drift sensor reads the policy's
materializations and launches the retrain when it says so.
"""

import datetime as dt

import dagster as dg
import numpy as np
import polars as pl

from assets import metadata as md
from assets.artifact_io_manager import ARTIFACT_IO_MANAGER
from assets.partitions import DAILY, DRIFT_POOL, DRIFT_READINGS, POLICY_MEMORY, WINDOW_INPUT, partition_day
from assets.resources import DatasetResource, StorageResource
from pipeline import causes, drift, estimation, evaluation, policy, sources
from pipeline.dataset import DatasetConfig
from pipeline.encoding import student_matrix
from pipeline.registry import PRODUCTION, REFERENCE_FILE, Version
from pipeline.student import Student

GROUP = "feedback"


def _drift_inputs(day: dt.date, version: Version, recent_features: pl.DataFrame, gold: pl.DataFrame,
                  field_predictions: list[str], config: DatasetConfig) -> drift.DriftInputs:
    lineage, student = version.entry["lineage"], version.entry["metrics"]["student"]
    return drift.drift_inputs(
        day, version.version, pl.read_parquet(version.file(REFERENCE_FILE)), recent_features, gold,
        trained_through=dt.date.fromisoformat(lineage["trained_through"]),
        reference_accuracy=student["accuracy"], reference_test_rows=lineage["training_rows"].get("test", 0),
        field_predictions=field_predictions, drift=config.feedback.drift, concept=config.feedback.concept,
        reference_slices=evaluation.student_slice_accuracy(version.directory),
    )


ESTIMATE_BY_SITE = (
    md.Column("site"), md.Column("estimated_accuracy", "float", "mean calibrated top-class probability of the site's rows"),
    md.Column("low", "float", "lower end of the sampling band"), md.Column("high", "float", "upper end of the sampling band"),
    md.Column("rows", "int"), md.Column("reliable", "bool", "inputs inside the reference's range and categories"),
)


def _estimate_metadata(report: pl.DataFrame, summary: drift.DriftSummary, top: int) -> dict:
    """The estimate (NaN when unreliable or not made), its check against returned labels, the causes."""
    if not report.filter(pl.col("kind") == drift.ESTIMATE).height:
        return {"estimate_reliable": False}

    def number(value: float | None) -> dg.MetadataValue:
        return dg.MetadataValue.float(value if value is not None and summary.estimate_reliable else float("nan"))

    rows = {r["test"]: r for r in report.filter(pl.col("kind") == drift.ESTIMATE).iter_rows(named=True)}
    checked = rows.get(estimation.FRESH_ESTIMATE_TEST)
    names, sentence, table = causes.top_causes(report, top)
    sites = [{"site": t.split(" @ ", 1)[1], "estimated_accuracy": r["statistic"], "low": r["low"], "high": r["high"],
              "rows": r["n_current"], "reliable": r["tested"]} for t, r in rows.items() if " @ " in t]
    return {
        "estimated_accuracy": number(summary.estimated_accuracy), "estimated_accuracy_low": number(summary.estimated_low),
        "estimated_accuracy_high": number(summary.estimated_high), "estimate_reliable": summary.estimate_reliable,
        "estimated_harm": summary.estimated_harm,
        "estimated_macro_f1": number(rows[drift.ESTIMATED_F1_TEST]["statistic"]),
        "rows_outside_reference": dg.MetadataValue.float(rows[estimation.UNSEEN_TEST]["statistic"]),
        "estimate_by_site": md.table(sites, ESTIMATE_BY_SITE),
        "fresh_estimated_accuracy": dg.MetadataValue.float(checked["statistic"] if checked else float("nan")),
        "fresh_measured_accuracy": dg.MetadataValue.float(checked["current_value"] if checked else float("nan")),
        "estimate_error": dg.MetadataValue.float(abs(checked["statistic"] - checked["current_value"]) if checked else float("nan")),
        "top_causes": dg.MetadataValue.json(names), "cause_summary": sentence, "causes": dg.MetadataValue.md(table),
    }


def _verdict(row: dict) -> str:
    if not row["tested"]:
        return f"not tested (n < {row['min_n']})"
    return "yes" if row["drifted"] else "no"


FEATURE_COLUMNS = [
    md.Column("feature"), md.Column("kind", description="numeric (KS) or categorical (chi-squared)"),
    md.Column("statistic", "float"), md.Column("p_adjusted", "float", "p-value, corrected for the number of features"),
    md.Column("effect", "float", "effect size (KS distance or PSI)"), md.Column("floor", "float", "the effect a drift must reach"),
    md.Column("rows", "int", "today's rows tested (pooled with earlier days when small)"), md.Column("drifted"),
]


def _metadata(report: pl.DataFrame, summary: drift.DriftSummary, inputs: drift.DriftInputs, detector: str) -> dict:
    inputs_table = report.filter(pl.col("kind").is_in([drift.NUMERIC, drift.CATEGORICAL])).sort("effect", descending=True, nulls_last=True)
    features = [{**r, "feature": r["test"], "rows": r["n_current"], "drifted": _verdict(r)} for r in inputs_table.iter_rows(named=True)]
    concept = report.filter(pl.col("kind") == drift.CONCEPT).row(0, named=True)
    return {
        "production_version": inputs.production_version, "detector": detector,
        "alarm": summary.alarm, "data_drift": summary.data_drift, "prediction_drift": summary.prediction_drift,
        "concept_drift": summary.concept_drift, "settled": summary.settled,
        "drifted_features": len(summary.drifted_features),
        "max_effect_ratio": md.metric(summary.max_effect_ratio),
        "fresh_labels": summary.fresh_labels,
        "concept_test": (f"tested on {concept['n_current']} labels of {concept['days']} day(s)" if concept["tested"]
                         else f"not tested (n {concept['n_current']} < {concept['min_n']})"),
        "untested": dg.MetadataValue.json(summary.untested),
        "pooled_days": inputs.current_days,
        "fresh_label_accuracy": md.metric(summary.fresh_accuracy),
        "reference_accuracy": md.metric(summary.reference_accuracy),
        "fallen_slices": dg.MetadataValue.json(summary.concept_slices),
        "severity": md.metric(summary.severity),
        "rows": inputs.todays_rows.height, "tested_rows": inputs.current.height, "reference_rows": inputs.reference.height,
        "device_predictions": len(inputs.field_predictions or []),
        "features": md.table(features, FEATURE_COLUMNS),
    }


@dg.asset(
    group_name=GROUP, partitions_def=DAILY,
    ins={"recent_features": dg.AssetIn("features", partition_mapping=DRIFT_READINGS, metadata=WINDOW_INPUT),
         "gold_labels": dg.AssetIn("gold_labels", partition_mapping=DRIFT_POOL, metadata=WINDOW_INPUT)},
)
def drift_report(context: dg.AssetExecutionContext, recent_features: pl.DataFrame, gold_labels: pl.DataFrame,
                 dataset: DatasetResource, storage: StorageResource) -> dg.Output[pl.DataFrame]:
    """Today against the production model's reference rows: a test per input (KS / chi-squared,
    corrected for many features, with an effect-size floor), inputs against yesterday, the
    predicted-class distribution, and accuracy on the labels that came back today. A small day is
    pooled with the newest days since the model was trained until each test has its minimum of
    rows; a test that still lacks them is reported as not tested, not as "not drifted"."""
    config, day, registry = dataset.load(), partition_day(context), storage.registry
    if not registry.has_alias(PRODUCTION):
        return dg.Output(drift.empty_report(), metadata={"production_version": "none", "alarm": False,
                                                          "reason": "no production model yet: nothing to compare"})
    version = registry.get(PRODUCTION)
    inputs = _drift_inputs(day, version, recent_features, gold_labels, sources.read_field_predictions(config.predictions_dir, day), config)
    student = Student.load(version.directory)
    preprocessing = version.entry["preprocessing"]
    numeric, categorical = drift.monitored_features(config)
    detector = drift.make_detector(config.feedback.drift.detector)
    def probabilities(frame: pl.DataFrame) -> np.ndarray:
        return student.predict_proba(student_matrix(frame, preprocessing))

    explain = estimation.explainer(version.directory, version.entry, probabilities, config) if config.feedback.estimate.enabled else None
    report = drift.drift_report(inputs, probabilities, numeric, categorical, config.classes, config.feedback.drift,
                                config.feedback.concept, detector, explain)
    summary = drift.summarise(report, len(numeric) + len(categorical), config.feedback.policy.full_retrain_drop)
    return dg.Output(report, metadata={**_metadata(report, summary, inputs, detector.name),
                                       **_estimate_metadata(report, summary, config.feedback.estimate.top_causes)})


@dg.asset(
    group_name=GROUP, partitions_def=DAILY, io_manager_key=ARTIFACT_IO_MANAGER,
    ins={"drift_reports": dg.AssetIn("drift_report", partition_mapping=POLICY_MEMORY, metadata=WINDOW_INPUT)},
)
def retraining_policy(context: dg.AssetExecutionContext, drift_reports: pl.DataFrame, dataset: DatasetResource,
                      storage: StorageResource) -> dg.Output[policy.Decision]:
    """none / wait / incremental / full retrain, from today's drift report and the days before it
    (where the drift event started), with adapted hyper-parameters and the reason; after a retrain for
    a change of the label rule, follow-up retrains until post-change days fill the window. The drift
    sensor launches the retrain; the training window, teacher and student take the decision as an input."""
    config, day, registry = dataset.load(), partition_day(context), storage.registry
    change = registry.get(PRODUCTION).entry["lineage"].get("change_day") if registry.has_alias(PRODUCTION) else None
    decision = policy.decide_from_reports(day, drift_reports, config, dt.date.fromisoformat(change) if change else None)
    return dg.Output(decision, metadata={
        "action": decision.action, "reason": decision.reason, "retrain": decision.retrain,
        "event_key": decision.event_key or "", "production_version": decision.production_version or "",
        "change_day": decision.change_day or "none", "cooldown": decision.cooldown,
        "untested": dg.MetadataValue.json(list(decision.untested)),
        "severity": md.metric(decision.severity),
        "teacher": dg.MetadataValue.json(decision.teacher), "student": dg.MetadataValue.json(decision.student),
    })

