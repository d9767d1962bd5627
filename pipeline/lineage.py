"""A registry version's record: what its package and the drift report need, and its lineage (the
days, sites and rows the models learned from, the hyper-parameters they were fitted with after the
retraining policy's adaptation, the seed, the code version and the run)."""

import json
from pathlib import Path

import polars as pl

from pipeline import export, features as feature_lib, quantize, training_set as training_lib
from pipeline.calibration import CALIBRATION_FILE
from pipeline.code_version import code_version
from pipeline.dataset import SITE, TIMESTAMP, DatasetConfig
from pipeline.evaluation import EVALUATION_FILE
from pipeline.registry import REFERENCE_FILE
from pipeline.student import ARCHITECTURE_FILE
from pipeline.teacher import PREPROCESSING_FILE
from pipeline.teacher_update import UPDATE_FILE


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def version_entry(files: dict[str, Path], training_set: pl.DataFrame, partition: str, run_id: str,
                  change_day: str | None, config: DatasetConfig) -> dict:
    """The entry of a version made of ``files`` (the run's artifacts, by file name), trained on
    ``training_set`` for ``partition`` in run ``run_id``; ``change_day`` is the label-rule change the
    retrain was for, if any. The parameters are the configured ones with the teacher's and the
    student's replaced by those they actually ran with."""
    report, update, student = _json(files[EVALUATION_FILE]), _json(files[UPDATE_FILE]), _json(files[ARCHITECTURE_FILE])
    reference_rows = pl.read_parquet(files[REFERENCE_FILE])
    configured = config.training.model_dump(mode="json")
    training_days = sorted(training_set[TIMESTAMP].dt.date().unique())
    return {
        "classes": list(config.classes),
        "preprocessing": _json(files[PREPROCESSING_FILE])["preprocessing"],
        "onnx": {"opset": export.OPSET, "input": export.INPUT_NAME, "output": export.OUTPUT_NAME,
                 "models": {precision: name for precision, name in (("int8", quantize.INT8_FILE), ("fp32", export.ONNX_FILE))
                            if name in files}},
        "derived_features": feature_lib.derived_feature_notes(config),
        "metrics": {m: {k: report[m][k] for k in ("accuracy", "macro_f1", "newest_day")} for m in ("teacher", "student")},
        "calibration": _json(files[CALIBRATION_FILE]) if CALIBRATION_FILE in files else None,
        "reference": {"days": sorted({str(d) for d in reference_rows[TIMESTAMP].dt.date()}), "rows": reference_rows.height},
        "lineage": {
            "dataset": config.name, "partition": partition,
            "training_days": [str(d) for d in training_days], "trained_through": str(training_days[-1]),
            "training_rows": training_lib.split_counts(training_set),
            "sites": sorted(training_set[SITE].unique().to_list()),
            "teacher_update": {"method": update["method"], "reason": update["reason"],
                               **({"search": _chosen(update["search"])} if "search" in update else {})},
            "change_day": change_day,
            "student_search": student.get("search", {}),  # the shape a search chose and why; empty: none ran
            # models trained before the effective values were kept: the configured ones, as recorded then
            "params": {**configured, "teacher": update.get("params", configured["teacher"]),
                       "student": student.get("hyperparameters", configured["student"])},
            "seed": config.training.seed,
            "code_version": code_version(), "run_id": run_id,
        },
    }


def _chosen(search: dict) -> dict:
    """Which trial of which study the teacher's parameters come from, and why (``pipeline.teacher_search``)."""
    return {k: search[k] for k in ("study", "chosen_trial", "chosen_warm_start", "reason", "params", "warm_starts", "study_trials")}
