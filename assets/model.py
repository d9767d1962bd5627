"""Model layer: the LightGBM teacher, the distilled torch student, and their evaluation.

Models live as files in the artifact store (LightGBM text, a torch state dict), passed downstream by
``deps`` rather than through the IO manager; the training set arrives through the IO manager.
"""

import json

import dagster as dg
import polars as pl

from assets.partitions import DAILY
from assets.resources import DatasetResource, StorageResource
from pipeline import atomic, evaluation as evaluation_lib
from pipeline.student import Student, fit_student
from pipeline.teacher import Teacher, fit_teacher

GROUP = "model"
EVALUATION_FILE = "evaluation.json"


@dg.asset(group_name=GROUP, partitions_def=DAILY)
def teacher_model(context: dg.AssetExecutionContext, training_set: pl.DataFrame,
                  dataset: DatasetResource, storage: StorageResource) -> dg.MaterializeResult:
    """LightGBM multiclass teacher trained on the window's train split, early-stopped on validation,
    saved in LightGBM's text format with its preprocessing constants."""
    teacher = fit_teacher(training_set, dataset.load())
    directory = storage.artifact_dir("teacher_model", context.partition_key)
    with atomic.atomic_dir(directory) as tmp:
        teacher.save(tmp)
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(directory)),
        "best_iteration": teacher.booster.best_iteration,
        "trees": teacher.booster.num_trees(),
    })


@dg.asset(group_name=GROUP, partitions_def=DAILY, deps=[teacher_model])
def student_model(context: dg.AssetExecutionContext, training_set: pl.DataFrame,
                  dataset: DatasetResource, storage: StorageResource) -> dg.MaterializeResult:
    """Small MLP distilled from the teacher's temperature-softened scores on labelled and unlabelled
    rows, mixed with the gold labels (alpha); the epoch with the best validation loss is kept."""
    teacher = Teacher.load(storage.artifact_dir("teacher_model", context.partition_key))
    student = fit_student(training_set, teacher, dataset.load())
    directory = storage.artifact_dir("student_model", context.partition_key)
    with atomic.atomic_dir(directory) as tmp:
        student.save(tmp)
    best = min(student.history, key=lambda h: h["validation_loss"])
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(directory)),
        "parameters": sum(p.numel() for p in student.model.parameters()),
        "best_epoch": best["epoch"], "validation_loss": best["validation_loss"],
    })


@dg.asset(group_name=GROUP, partitions_def=DAILY, deps=[teacher_model, student_model])
def evaluation(context: dg.AssetExecutionContext, training_set: pl.DataFrame,
               dataset: DatasetResource, storage: StorageResource) -> dg.MaterializeResult:
    """Teacher and student on the test split: accuracy, macro-F1, per-class precision and recall,
    confusion matrices (plotted), and accuracy per site and per firmware / device model slice."""
    config = dataset.load()
    teacher = Teacher.load(storage.artifact_dir("teacher_model", context.partition_key))
    student = Student.load(storage.artifact_dir("student_model", context.partition_key))
    report = evaluation_lib.evaluate_models(training_set, teacher, student, config)
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
