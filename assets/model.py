"""Model layer: the LightGBM teacher, the distilled torch student, and their evaluation.

The training set, and the window of it the models learn from (``training_window``), arrive through
the Parquet IO manager; models, evaluations and the policy's decision through the artifact IO
manager (``assets/artifact_io_manager.py``), as typed inputs: every edge they travel is in the graph.
"""

import datetime as dt
import math
from dataclasses import replace

import dagster as dg
import polars as pl

from assets import metadata as md
from assets.artifact_io_manager import ARTIFACT_IO_MANAGER, ArtifactFolder
from assets.partitions import DAILY, partition_day
from assets.resources import DatasetResource, StorageResource
from pipeline import evaluation as evaluation_lib, policy, recency
from pipeline.federated import read_weights
from pipeline.policy import Decision
from pipeline.registry import PRODUCTION, Registry
from pipeline.student import Student, Weights, adapted_spec, best_epoch, encoding_fingerprint, transfer_counts
from pipeline.student_search import StudentSearch, train_student
from pipeline.teacher import Teacher
from pipeline.teacher_search import MIN_TRIALS_FOR_IMPORTANCE, OBJECTIVE, TeacherSearch
from pipeline.teacher_update import TeacherUpdate, recalled_version, trained_on_window, update_teacher
from pipeline.training_set import SPLIT, UNLABELLED

GROUP = "model"
FEDERATED_START = dg.AssetDep("federated_student")
"""``student_model`` may start from the newest global weights of a federated round up to its day
(``student.init: federated``), read from the federated store: a dependency without an input."""


def _decision(context: dg.AssetExecutionContext, retraining_policy: Decision | None) -> Decision:
    """The day's policy decision, or, for a model materialized without one (by hand), a full retrain."""
    return retraining_policy or policy.on_request(partition_day(context))


@dg.asset(group_name=GROUP, partitions_def=DAILY)
def training_window(context: dg.AssetExecutionContext, training_set: pl.DataFrame, retraining_policy: Decision | None,
                    dataset: DatasetResource) -> dg.MaterializeResult:
    """The part of the training set this retrain's models learn from and are judged on: the newest
    days, and how much older rows weigh, chosen by fitting each candidate window and scoring it on the
    newest labelled validation rows (after a concept change, the rows since the change). On a
    stationary stream the long window wins; after a change, the short one."""
    decision = _decision(context, retraining_policy)
    choice = recency.choose_window(training_set, dataset.load(), decision.change_date)
    frame = recency.apply(training_set, choice)
    return dg.MaterializeResult(value=frame, metadata={
        "days": choice.days, "decay": choice.decay, "first_day": str(choice.first_day), "change_day": decision.change_day or "none",
        "reason": choice.reason, "rows": frame.height, "labelled_rows": frame.filter(pl.col(SPLIT) != UNLABELLED).height,
        "candidates": md.table(choice.scores, CANDIDATE_COLUMNS),
        "choice": dg.MetadataValue.json(choice.to_json()),
    })


CANDIDATE_COLUMNS = [
    md.Column("name", description="candidate window"), md.Column("days", "int"), md.Column("decay", "float"),
    md.Column("train_rows", "int", "training rows the candidate learns from"),
    md.Column("weight", "float", "their summed weight after the decay"),
    md.Column("accuracy", "float", "on the newest labelled validation rows"),
]


@dg.asset(group_name=GROUP, partitions_def=DAILY, io_manager_key=ARTIFACT_IO_MANAGER)
def teacher_model(context: dg.AssetExecutionContext, training_window: pl.DataFrame, retraining_policy: Decision | None,
                  dataset: DatasetResource, storage: StorageResource) -> dg.Output[TeacherUpdate]:
    """LightGBM multiclass teacher, saved in LightGBM's text format with its preprocessing constants.
    As the retraining policy decides: an incremental update of the production teacher (leaf refit or
    continued boosting, whichever validates best on the newest rows and does not forget the older
    ones), or a full retrain on the window, early-stopped on validation."""
    config, registry = dataset.load(), storage.registry
    decision = _decision(context, retraining_policy)
    production, trained_through = None, None
    if registry.has_alias(PRODUCTION):
        version = registry.get(PRODUCTION)
        production = Teacher.load(version.directory)
        trained_through = dt.date.fromisoformat(version.entry["lineage"]["trained_through"])
    past = _past_teachers(registry, config.training.recall.versions) if decision.change_day and config.training.recall.enabled else {}
    update = update_teacher(training_window, production, trained_through, decision, config, storage.tuning_storage_url, past)
    return dg.Output(update, metadata={
        "method": update.method, "reason": update.reason, "policy": decision.action,
        "attempts": md.table(update.to_json()["attempts"], ATTEMPT_COLUMNS),
        "seconds": md.seconds(update.seconds),
        "best_iteration": update.teacher.booster.best_iteration,
        "trees": update.teacher.booster.num_trees(),
        **(_teacher_search_metadata(update.search) if update.search else {}),
    })


def _past_teachers(registry: Registry, limit: int) -> dict[str, Teacher]:
    """Earlier production versions' teachers, which a retrain for a change of the label rule may recall."""
    return {version: Teacher.load(registry.get(version).directory) for version in registry.past_production(limit)}


ATTEMPT_COLUMNS = [
    md.Column("method", description="how the teacher was made"), md.Column("seconds", "float"),
    md.Column("new_macro_f1", "float", "on the newest validation rows"),
    md.Column("older_macro_f1", "float", "on the older validation rows (forgetting)"),
    md.Column("params", description="hyper-parameters, after the policy's adaptation"),
]


def _teacher_search_metadata(search: TeacherSearch) -> dict:
    """The parameter search behind a tuned teacher: its trials, the best value per trial, which
    parameters mattered, and the chosen ones."""
    history = search.history()
    trials = [{**t, "best": h["best"], "params": {k: md.rounded(v) for k, v in t["params"].items()}}
              for t, h in zip(search.trials, history, strict=True)]
    curves = {"trial": [h["value"] if h["value"] is not None else math.nan for h in history],
              "best so far": [h["best"] if h["best"] is not None else math.nan for h in history]}
    return {
        "search": search.reason,
        "search_params": dg.MetadataValue.json(search.params),
        "search_study": f"{search.study} ({search.study_trials} trials in {search.storage})",
        "search_seconds": md.seconds(search.seconds),
        "search_trials": md.table(trials, TEACHER_TRIAL_COLUMNS),
        "search_history": dg.MetadataValue.md(evaluation_lib.png_markdown(
            evaluation_lib.learning_curve_png(curves, "trial"), f"validation {OBJECTIVE} per trial and the best so far")),
        "search_importances": md.table(({"parameter": k, "importance": v} for k, v in search.importances.items()), IMPORTANCE_COLUMNS)
        if search.importances else f"not computed: fewer than {MIN_TRIALS_FOR_IMPORTANCE} completed trials",
    }


TEACHER_TRIAL_COLUMNS = [
    md.Column("number", "int", "trial number in the study"), md.Column("state", description="complete, pruned or fail"),
    md.Column("warm_start", description="where an enqueued start's parameters come from (empty: a TPE proposal)"),
    md.Column("value", "float", f"validation {OBJECTIVE} at the early-stopping iteration"),
    md.Column("best", "float", "the best value of this search so far"),
    md.Column("best_iteration", "int"), md.Column("last_step", "int", "last iteration reported (where a pruned trial stopped)"),
    md.Column("seconds", "float"), md.Column("params", description="the trial's parameters"),
]
IMPORTANCE_COLUMNS = [md.Column("parameter"), md.Column("importance", "float", "fANOVA share of the validation loss's variance")]


@dg.asset(group_name=GROUP, partitions_def=DAILY, io_manager_key=ARTIFACT_IO_MANAGER, deps=[FEDERATED_START])
def student_model(context: dg.AssetExecutionContext, training_window: pl.DataFrame, teacher_model: ArtifactFolder,
                  retraining_policy: Decision | None, dataset: DatasetResource,
                  storage: StorageResource) -> dg.Output[Student]:
    """Small MLP distilled from the teacher's temperature-softened scores on the transfer set (labelled,
    unlabelled and augmented rows), mixed with the rows' labels (alpha: the production student's, or on a
    full retrain another that is significantly better on validation); the epoch with the best
    validation loss is kept, and the learning curves are plotted; the student is then refitted for those
    epochs on the training and validation rows together (``refit_with_validation``), from a teacher boosted again
    on them where the teacher was trained on the window. Starts from scratch or, with
    ``student.init: federated``, from the newest federated global weights. Batch size and epochs as
    the retraining policy adapted them to the data volume. With ``tuning.enabled``, a full retrain
    searches the student's shape (width, depth, int8 first layer) for validation macro-F1 against
    single-row latency, and an incremental update keeps the production student's shape. A teacher
    recalled for a rule that came back brings its own version's student, which served that rule."""
    if recalled := _recalled_student(teacher_model, storage.registry):
        return recalled
    config, teacher = dataset.load(), Teacher.load(teacher_model.path)
    decision = _decision(context, retraining_policy)
    spec = adapted_spec(training_window, config, decision.student)
    start = _federated_start(storage, context.partition_key, teacher) if spec.init == "federated" else None
    production = _production_student(storage)
    student, search = train_student(training_window, teacher, config, spec, decision.action, production, start,
                                    storage.tuning_storage_url if config.training.tuning.enabled else None,
                                    refit_teacher=trained_on_window(teacher_model.path))
    best = student.history[best_epoch(student.history) - 1]
    curves = {"train": [h["train_loss"] for h in student.history], "validation": [h["validation_loss"] for h in student.history]}
    return dg.Output(student, metadata={
        "parameters": student.parameters, "start": student.start,
        "transfer_rows": md.counts(transfer_counts(training_window, spec), md.Column("kind", description="rows of the transfer set"),
                                   md.Column("rows", "int")),
        "best_epoch": best["epoch"], "validation_loss": md.metric(best["validation_loss"]),
        "batch_size": spec.batch_size, "epochs": spec.epochs,
        "temperature": spec.temperature, "alpha": student.hyperparameters.get("alpha", spec.alpha),
        "alpha_choice": student.alpha_choice.get("reason") or "the incumbent's: the student search does not judge the weight",
        "refit": _refit_metadata(student.refit),
        "learning_curves": dg.MetadataValue.md(evaluation_lib.png_markdown(
            evaluation_lib.learning_curve_png(curves, "epoch"), "train and validation loss per epoch")),
        **(_student_search_metadata(search) if search else {}),
    })


def _refit_metadata(refit: dict) -> str:
    if not refit:
        return "the early-stopped fit on the training rows"
    rows = f"refitted on the training and {refit['validation_rows']} validation rows for {refit['epochs']} epochs"
    rounds = refit.get("teacher_rounds")
    return f"{rows}, from its teacher refitted on them for {rounds} rounds" if rounds else f"{rows}, from its teacher as trained"


def _recalled_student(teacher_folder: ArtifactFolder, registry: Registry) -> dg.Output[Student] | None:
    """The student of the version whose teacher was recalled (``teacher_update.recalled_version``)."""
    version = recalled_version(teacher_folder.path)
    if version is None:
        return None
    student = replace(Student.load(registry.get(version).directory), start=f"recalled with its teacher from {version}")
    return dg.Output(student, metadata={"parameters": student.parameters, "start": student.start})


def _student_search_metadata(search: StudentSearch) -> dict:
    trials = [t.to_json() for t in search.trials]
    chosen = search.chosen.to_json() if search.chosen else None
    return {
        "search_trials": md.table(trials, STUDENT_TRIAL_COLUMNS),
        "search_pareto_front": md.table([t.to_json() for t in search.front], STUDENT_TRIAL_COLUMNS),
        "search_pareto_plot": dg.MetadataValue.md(evaluation_lib.png_markdown(
            evaluation_lib.pareto_png(trials, chosen, search.gates.max_latency_us), "validation macro-F1 against single-row latency")),
        "search_chosen": dg.MetadataValue.json(chosen or {}), "search_reason": search.reason,
        "search_study": search.study, "search_seconds": md.seconds(search.seconds),
    }


STUDENT_TRIAL_COLUMNS = [
    md.Column("number", "int", "the trial's number in the study (earlier searches' trials come first)"),
    md.Column("hidden", description="hidden layer widths"), md.Column("depth", "int"),
    md.Column("quantize_first_layer", "bool", "the first layer int8 too (else fp32)"),
    md.Column("macro_f1", "float", "int8 model, validation split"),
    md.Column("latency_us", "float", "median single-row µs through the edge runtime, int8, one thread"),
    md.Column("package_bytes", "int", "estimated size of its package"),
    md.Column("pareto", "bool", "no other trial of this search is as accurate and faster"),
    md.Column("warm_start", "bool", "the YAML's student"), md.Column("seconds", "float", "distil, export, measure"),
]


def _production_student(storage: StorageResource) -> Student | None:
    """The production version's student, whose distillation weight a retrain starts from, and whose
    shape an incremental update keeps when tuning is on."""
    registry = storage.registry
    return Student.load(registry.get(PRODUCTION).directory) if registry.has_alias(PRODUCTION) else None


def _federated_start(storage: StorageResource, day: str, teacher: Teacher) -> tuple[str, Weights] | None:
    """The newest federated global weights up to ``day`` trained under this teacher's encoding, if any."""
    path = storage.federated.latest_global(day, inclusive=True, encoding=encoding_fingerprint(teacher.preprocessing))
    return (str(path.relative_to(storage.root)), read_weights(path)) if path else None


@dg.asset(group_name=GROUP, partitions_def=DAILY, io_manager_key=ARTIFACT_IO_MANAGER)
def evaluation(context: dg.AssetExecutionContext, training_window: pl.DataFrame, teacher_model: Teacher, student_model: Student,
               retraining_policy: Decision | None, dataset: DatasetResource) -> dg.Output[evaluation_lib.EvaluationReport]:
    """Teacher and student on the test split: accuracy, macro-F1, per-class precision and recall,
    confusion matrices (plotted), and accuracy per site and per firmware / device model slice. Each
    figure stands beside the rows it was measured on, marked a small sample below
    ``report.min_metric_rows``: a newest day of a few dozen rows scores 1.000 by luck. After a
    confirmed change of the label rule, on the test rows since it."""
    config = dataset.load()
    report = evaluation_lib.evaluate_models(training_window, teacher_model, student_model, config,
                                            _decision(context, retraining_policy).change_date)
    plot = evaluation_lib.confusion_png({m: report[m]["confusion_matrix"] for m in MODELS}, config.classes)
    min_rows, newest_rows = config.report.min_metric_rows, report["teacher"]["newest_day"]["rows"]
    numbers = {
        f"{model}_{name}": md.metric(value)
        for model in MODELS
        for name, value in (("accuracy", report[model]["accuracy"]), ("macro_f1", report[model]["macro_f1"]),
                            ("newest_day_accuracy", report[model]["newest_day"]["accuracy"]),
                            ("newest_day_macro_f1", report[model]["newest_day"]["macro_f1"]))
    }
    return dg.Output(evaluation_lib.EvaluationReport(report), metadata={
        **numbers,
        "test_rows": report["test_rows"],
        "test_sample": md.sample(report["test_rows"], min_rows),
        "newest_test_day": report["newest_test_day"],
        "newest_test_day_rows": newest_rows,
        "newest_test_day_sample": md.sample(newest_rows, min_rows),
        "metrics": md.table(_metric_rows(report, min_rows), METRIC_COLUMNS),
        "per_class": md.table(_per_class_rows(report, min_rows), PER_CLASS_COLUMNS),
        "slices": md.table(_slice_rows(report, min_rows), SLICE_COLUMNS),
        "confusion_matrices": dg.MetadataValue.md(evaluation_lib.png_markdown(plot, "confusion matrices")),
    })


MODELS = ("teacher", "student")
SAMPLE = md.Column("sample", description="'small sample' when measured on fewer than report.min_metric_rows rows")
METRIC_COLUMNS = [md.Column("model"), md.Column("scope", description="the whole test split or its newest day"),
                  md.Column("rows", "int", "test rows measured on"), md.Column("accuracy", "float"),
                  md.Column("macro_f1", "float"), SAMPLE]
PER_CLASS_COLUMNS = [md.Column("model"), md.Column("class"), md.Column("precision", "float"), md.Column("recall", "float"),
                     md.Column("support", "int", "test rows of the class"), SAMPLE]
SLICE_COLUMNS = [md.Column("model"), md.Column("slice", description="the column sliced by"), md.Column("value"),
                 md.Column("rows", "int", "test rows in the slice"), md.Column("accuracy", "float"), SAMPLE]


def _metric_rows(report: dict, min_rows: int) -> list[dict]:
    return [{"model": m, "scope": scope, "rows": r["rows"], "accuracy": r["accuracy"], "macro_f1": r["macro_f1"],
             "sample": md.sample(r["rows"], min_rows)}
            for m in MODELS for scope, r in (("test split", report[m]), (f"newest day {report['newest_test_day']}", report[m]["newest_day"]))]


def _per_class_rows(report: dict, min_rows: int) -> list[dict]:
    return [{"model": m, "class": name, **c, "sample": md.sample(c["support"], min_rows)}
            for m in MODELS for name, c in report[m]["per_class"].items()]


def _slice_rows(report: dict, min_rows: int) -> list[dict]:
    return [{"model": m, "slice": column, "value": value, **s, "sample": md.sample(s["rows"], min_rows)}
            for m in MODELS for column, values in report[m]["slices"].items() for value, s in values.items()]
