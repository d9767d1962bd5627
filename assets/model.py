"""Model layer: the LightGBM teacher, the distilled torch student, and their evaluation.

Models live as files in the artifact store (LightGBM text, a torch state dict), passed downstream by
``deps`` rather than through the IO manager; the training set, and the window of it the models learn
from (``training_window``), arrive through the IO manager.
"""

import datetime as dt
import json

import dagster as dg
import polars as pl

from assets.feedback import read_decision, retraining_policy
from assets.partitions import DAILY
from assets.resources import DatasetResource, StorageResource
from pipeline import atomic, recency
from pipeline import evaluation as evaluation_lib
from pipeline.federated import read_weights
from pipeline.registry import PRODUCTION
from pipeline.student import Student, Weights, adapted_spec, encoding_fingerprint, fit_student, transfer_counts
from pipeline.teacher import Teacher
from pipeline.teacher_update import update_teacher
from pipeline.training_set import SPLIT, UNLABELLED

GROUP = "model"
EVALUATION_FILE = "evaluation.json"
UPDATE_FILE = "update.json"


@dg.asset(group_name=GROUP, partitions_def=DAILY, deps=[retraining_policy])
def training_window(context: dg.AssetExecutionContext, training_set: pl.DataFrame,
                    dataset: DatasetResource, storage: StorageResource) -> dg.MaterializeResult:
    """The part of the training set this retrain's models learn from and are judged on: the newest
    days, and how much older rows weigh, chosen by fitting each candidate window and scoring it on the
    newest labelled validation rows (after a concept change, the rows since the change). On a
    stationary stream the long window wins; after a change, the short one."""
    decision = read_decision(storage, context.partition_key) or {}
    change = decision.get("change_day")
    choice = recency.choose_window(training_set, dataset.load(), dt.date.fromisoformat(change) if change else None)
    frame = recency.apply(training_set, choice)
    return dg.MaterializeResult(value=frame, metadata={
        "days": choice.days, "decay": choice.decay, "first_day": str(choice.first_day), "change_day": change or "none",
        "reason": choice.reason, "rows": frame.height, "labelled_rows": frame.filter(pl.col(SPLIT) != UNLABELLED).height,
        "candidates": dg.MetadataValue.md(_candidates_table(choice)),
        "choice": dg.MetadataValue.json(choice.to_json()),
    })


def _candidates_table(choice: recency.WindowChoice) -> str:
    lines = ["| window | train rows | weight | accuracy |", "|---|---|---|---|"]
    return "\n".join(lines + [f"| {c['name']} | {c['train_rows']} | {c['weight']} | {c['accuracy']:.3f} |" for c in choice.scores])


@dg.asset(group_name=GROUP, partitions_def=DAILY, deps=[retraining_policy])
def teacher_model(context: dg.AssetExecutionContext, training_window: pl.DataFrame,
                  dataset: DatasetResource, storage: StorageResource) -> dg.MaterializeResult:
    """LightGBM multiclass teacher, saved in LightGBM's text format with its preprocessing constants.
    As the retraining policy decides: an incremental update of the production teacher (leaf refit or
    continued boosting, whichever validates best on the newest rows and does not forget the older
    ones), or a full retrain on the window, early-stopped on validation."""
    config, registry = dataset.load(), storage.registry
    decision = read_decision(storage, context.partition_key) or _on_request(context.partition_key)
    production, trained_through = None, None
    if registry.has_alias(PRODUCTION):
        version = registry.get(PRODUCTION)
        production = Teacher.load(version.directory)
        trained_through = dt.date.fromisoformat(version.entry["lineage"]["trained_through"])
    update = update_teacher(training_window, production, trained_through, decision, config)
    directory = storage.artifact_dir("teacher_model", context.partition_key)
    with atomic.atomic_dir(directory) as tmp:
        update.teacher.save(tmp)
        atomic.write_text(tmp / UPDATE_FILE, json.dumps(update.to_json(), indent=2))
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(directory)),
        "method": update.method, "reason": update.reason, "policy": decision["action"],
        "attempts": dg.MetadataValue.json(update.to_json()["attempts"]),
        "seconds": dg.MetadataValue.float(update.seconds),
        "best_iteration": update.teacher.booster.best_iteration,
        "trees": update.teacher.booster.num_trees(),
    })


def _on_request(partition_key: str) -> dict:
    """Materialized without a policy decision (e.g. by hand): a full retrain, as asked."""
    return {"action": "full", "reason": f"materialized on request (no policy decision for {partition_key})",
            "teacher": {}, "student": {}}


@dg.asset(group_name=GROUP, partitions_def=DAILY, deps=[teacher_model])
def student_model(context: dg.AssetExecutionContext, training_window: pl.DataFrame,
                  dataset: DatasetResource, storage: StorageResource) -> dg.MaterializeResult:
    """Small MLP distilled from the teacher's temperature-softened scores on the transfer set (labelled,
    unlabelled and augmented rows), mixed with the rows' labels (alpha); the epoch with the best
    validation loss is kept, and the learning curves are plotted. Starts from scratch or, with
    ``student.init: federated``, from the newest federated global weights. Batch size and epochs as
    the retraining policy adapted them to the data volume."""
    config = dataset.load()
    teacher = Teacher.load(storage.artifact_dir("teacher_model", context.partition_key))
    adapted = (read_decision(storage, context.partition_key) or {}).get("student") or {}
    spec = adapted_spec(training_window, config, adapted)
    student = fit_student(training_window, teacher, config, spec, _federated_start(storage, context.partition_key, teacher) if spec.init == "federated" else None)
    directory = storage.artifact_dir("student_model", context.partition_key)
    with atomic.atomic_dir(directory) as tmp:
        student.save(tmp)
    best = min(student.history, key=lambda h: h["validation_loss"])
    curves = {"train": [h["train_loss"] for h in student.history], "validation": [h["validation_loss"] for h in student.history]}
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(directory)),
        "parameters": student.parameters, "start": student.start,
        "transfer_rows": dg.MetadataValue.json(transfer_counts(training_window, spec)),
        "best_epoch": best["epoch"], "validation_loss": best["validation_loss"],
        "batch_size": spec.batch_size, "epochs": spec.epochs,
        "temperature": spec.temperature, "alpha": spec.alpha,
        "learning_curves": dg.MetadataValue.md(evaluation_lib.png_markdown(
            evaluation_lib.learning_curve_png(curves, "epoch"), "train and validation loss per epoch")),
    })


def _federated_start(storage: StorageResource, day: str, teacher: Teacher) -> tuple[str, Weights] | None:
    """The newest federated global weights up to ``day`` trained under this teacher's encoding, if any."""
    path = storage.federated.latest_global(day, inclusive=True, encoding=encoding_fingerprint(teacher.preprocessing))
    return (str(path.relative_to(storage.root)), read_weights(path)) if path else None


@dg.asset(group_name=GROUP, partitions_def=DAILY, deps=[teacher_model, student_model])
def evaluation(context: dg.AssetExecutionContext, training_window: pl.DataFrame,
               dataset: DatasetResource, storage: StorageResource) -> dg.MaterializeResult:
    """Teacher and student on the test split: accuracy, macro-F1, per-class precision and recall,
    confusion matrices (plotted), and accuracy per site and per firmware / device model slice."""
    config = dataset.load()
    teacher = Teacher.load(storage.artifact_dir("teacher_model", context.partition_key))
    student = Student.load(storage.artifact_dir("student_model", context.partition_key))
    report = evaluation_lib.evaluate_models(training_window, teacher, student, config)
    directory = storage.artifact_dir("evaluation", context.partition_key)
    atomic.write_text(directory / EVALUATION_FILE, json.dumps(report, indent=2))
    plot = evaluation_lib.confusion_png({m: report[m]["confusion_matrix"] for m in ("teacher", "student")}, config.classes)
    numbers = {
        f"{model}_{name}": dg.MetadataValue.float(value)
        for model in ("teacher", "student")
        for name, value in (("accuracy", report[model]["accuracy"]), ("macro_f1", report[model]["macro_f1"]),
                            ("newest_day_accuracy", report[model]["newest_day"]["accuracy"]),
                            ("newest_day_macro_f1", report[model]["newest_day"]["macro_f1"]))
    }
    return dg.MaterializeResult(metadata={
        **numbers,
        "test_rows": report["test_rows"],
        "newest_test_day": report["newest_test_day"],
        "per_class": dg.MetadataValue.json({m: report[m]["per_class"] for m in ("teacher", "student")}),
        "slices": dg.MetadataValue.json({m: report[m]["slices"] for m in ("teacher", "student")}),
        "confusion_matrices": dg.MetadataValue.md(evaluation_lib.png_markdown(plot, "confusion matrices")),
    })
