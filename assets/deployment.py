"""Deployment layer: ONNX export with a parity gate, registration as a candidate, promotion to
production, the edge package."""

import datetime as dt
import hashlib
import json

import dagster as dg
import polars as pl

from assets.model import EVALUATION_FILE, UPDATE_FILE, evaluation, student_model, teacher_model
from assets.partitions import DAILY, PROJECT_ROOT
from assets.resources import DatasetResource, StorageResource
from pipeline import atomic, edge_package as package_lib, export, features as feature_lib, training_set as training_lib
from pipeline.dataset import TIMESTAMP, DatasetConfig
from pipeline.encoding import student_matrix
from pipeline.registry import CANDIDATE, PRODUCTION, REFERENCE_FILE, Registry, Version
from pipeline.student import ARCHITECTURE_FILE, WEIGHTS_FILE, Student
from pipeline.teacher import MODEL_FILE, PREPROCESSING_FILE, Teacher
from pipeline.training_set import SPLIT, VALIDATION

GROUP = "deployment"


@dg.asset(
    group_name=GROUP, partitions_def=DAILY, deps=[student_model],
    check_specs=[dg.AssetCheckSpec("torch_parity", asset="onnx_student", blocking=True,
                                   description="ONNX Runtime reproduces torch's probabilities on held-out rows")],
)
def onnx_student(context: dg.AssetExecutionContext, training_set: pl.DataFrame, storage: StorageResource):
    """The student exported to fp32 ONNX (dynamic batch), checked against torch on the held-out
    validation rows; a parity failure blocks everything downstream."""
    key = context.partition_key
    student = Student.load(storage.artifact_dir("student_model", key))
    preprocessing = Teacher.load(storage.artifact_dir("teacher_model", key)).preprocessing
    path = storage.artifact_dir("onnx_student", key) / export.ONNX_FILE
    export.export_onnx(student, path)
    held_out = training_set.filter(pl.col(SPLIT) == VALIDATION)  # the test split is kept for evaluation only
    parity = export.check_parity(student, path, student_matrix(held_out, preprocessing))
    yield dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(str(path)), "bytes": path.stat().st_size, "opset": export.OPSET})
    yield dg.AssetCheckResult(check_name="torch_parity", passed=parity.ok(), metadata={
        "rows": parity.rows, "max_abs_diff": dg.MetadataValue.float(parity.max_abs_diff),
        "argmax_agreement": dg.MetadataValue.float(parity.argmax_agreement),
    })


def code_version() -> str:
    """Hash of the pipeline and asset sources: which code produced a model, with or without git
    (the configuration is recorded beside it, in the lineage's params)."""
    digest = hashlib.sha256()
    for path in sorted([*(PROJECT_ROOT / "pipeline").glob("*.py"), *(PROJECT_ROOT / "assets").glob("*.py")]):
        digest.update(str(path.relative_to(PROJECT_ROOT)).encode() + path.read_bytes())
    return digest.hexdigest()[:12]


@dg.asset(group_name=GROUP, partitions_def=DAILY, deps=[onnx_student, evaluation, teacher_model])
def candidate_model(context: dg.AssetExecutionContext, training_set: pl.DataFrame,
                    dataset: DatasetResource, storage: StorageResource) -> dg.MaterializeResult:
    """Registers this run's teacher, student, ONNX file and evaluation as a new registry version with
    its lineage (the days and rows it learned from, parameters, seed, code version, run), aliased
    ``candidate``."""
    key, config = context.partition_key, dataset.load()
    reference = storage.artifact_dir("candidate_model", key) / REFERENCE_FILE
    training_days = sorted(training_set[TIMESTAMP].dt.date().unique())
    reference_rows = _reference_rows(training_set, training_days, config)
    with atomic.atomic_path(reference) as tmp:
        reference_rows.write_parquet(tmp)
    files = {
        MODEL_FILE: storage.artifact_dir("teacher_model", key) / MODEL_FILE,
        PREPROCESSING_FILE: storage.artifact_dir("teacher_model", key) / PREPROCESSING_FILE,
        WEIGHTS_FILE: storage.artifact_dir("student_model", key) / WEIGHTS_FILE,
        ARCHITECTURE_FILE: storage.artifact_dir("student_model", key) / ARCHITECTURE_FILE,
        export.ONNX_FILE: storage.artifact_dir("onnx_student", key) / export.ONNX_FILE,
        EVALUATION_FILE: storage.artifact_dir("evaluation", key) / EVALUATION_FILE,
        REFERENCE_FILE: reference,
    }
    report = json.loads(files[EVALUATION_FILE].read_text(encoding="utf-8"))
    update = json.loads((storage.artifact_dir("teacher_model", key) / UPDATE_FILE).read_text(encoding="utf-8"))
    version_id = f"v{key.replace('-', '')}-{context.run.run_id[:8]}"
    entry = {
        "classes": list(config.classes),
        "preprocessing": json.loads(files[PREPROCESSING_FILE].read_text(encoding="utf-8"))["preprocessing"],
        "onnx": {"opset": export.OPSET, "input": export.INPUT_NAME, "output": export.OUTPUT_NAME},
        "derived_features": feature_lib.derived_feature_notes(config),
        "metrics": {m: {k: report[m][k] for k in ("accuracy", "macro_f1", "newest_day")} for m in ("teacher", "student")},
        "reference": {"days": sorted({str(d) for d in reference_rows[TIMESTAMP].dt.date()}), "rows": reference_rows.height},
        "lineage": {
            "dataset": config.name, "partition": key,
            "training_days": [str(d) for d in training_days], "trained_through": str(training_days[-1]),
            "training_rows": training_lib.split_counts(training_set),
            "teacher_update": {"method": update["method"], "reason": update["reason"]},
            "params": config.training.model_dump(mode="json"), "seed": config.training.seed,
            "code_version": code_version(), "run_id": context.run.run_id,
        },
    }
    registry = storage.registry
    version = registry.register(version_id, files, entry)
    moved = _newest_partition_wins(registry, version, reason=f"registered by run {context.run.run_id}")
    return dg.MaterializeResult(metadata={
        "version": version.version, "path": dg.MetadataValue.path(str(version.directory)),
        "candidate_alias": version.version if moved else registry.resolve(CANDIDATE),
        "student_macro_f1": dg.MetadataValue.float(report["student"]["macro_f1"]),
    })


def _reference_rows(training_set: pl.DataFrame, training_days: list[dt.date], config: DatasetConfig) -> pl.DataFrame:
    """The model inputs of the newest ``reference_days`` of the window (a seeded sample of at most
    ``reference_max_rows``): the world this model was fitted to, for the drift report."""
    spec = config.feedback.drift
    numeric, categorical = feature_lib.model_feature_names(config)
    newest = training_set.filter(pl.col(TIMESTAMP).dt.date().is_in(training_days[-spec.reference_days:]))
    rows = newest.select(TIMESTAMP, *numeric, *categorical)
    return rows.sample(spec.reference_max_rows, seed=config.training.seed) if rows.height > spec.reference_max_rows else rows


@dg.asset(group_name=GROUP, partitions_def=DAILY, deps=[candidate_model])
def production_model(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Promotes this run's candidate to ``production`` (the version it replaces becomes ``previous``)
    once the blocking checks upstream have passed; a candidate of an older day than production (a
    backfill) is registered but not promoted. The drift report judges the production model."""
    registry = storage.registry
    version = registry.get(_registered_version(context))
    if (newer := _newer_day_holds(registry, PRODUCTION, version)) is not None:
        return dg.MaterializeResult(metadata={"promoted": False, "production": newer.version, "reason":
                                              f"production {newer.version} is of a newer day than {version.version}"})
    replaced = registry.promote(version.version, reason=f"promoted by run {context.run.run_id}")
    return dg.MaterializeResult(metadata={"promoted": True, "production": version.version, "previous": replaced or ""})


@dg.asset(group_name=GROUP, partitions_def=DAILY, deps=[production_model])
def edge_package(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """The final asset: a deterministic zip with the fp32 ONNX student, a manifest
    (version, feature order, preprocessing constants, classes, metrics, sha256 of every file) and a
    runtime that needs only numpy and onnxruntime."""
    version_id = _registered_version(context)
    version = storage.registry.get(version_id)
    path = storage.package_path(version.version)
    manifest = package_lib.build_package(version, export.ONNX_FILE, path)
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(path)), "version": version.version, "bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "student_macro_f1": dg.MetadataValue.float(manifest["metrics"]["macro_f1"]),
    })


def _newer_day_holds(registry: Registry, alias: str, version: Version) -> Version | None:
    """The version ``alias`` points at, if it is of a newer day than ``version``: a backfill of older
    days registers their versions but must not turn an alias's clock back."""
    if not registry.has_alias(alias):
        return None
    held = registry.get(alias)
    return held if held.entry["lineage"]["partition"] > version.entry["lineage"]["partition"] else None


def _newest_partition_wins(registry: Registry, version: Version, reason: str) -> bool:
    """Point ``candidate`` at ``version`` unless it already holds a newer day's model."""
    if _newer_day_holds(registry, CANDIDATE, version) is not None:
        return False
    registry.set_alias(CANDIDATE, version.version, reason=reason)
    return True


def _registered_version(context: dg.AssetExecutionContext) -> str:
    """The version ``candidate_model`` registered in this run, else its latest for this partition
    (when ``edge_package`` is materialized on its own)."""
    in_run = context.instance.get_records_for_run(context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    for record in in_run:
        materialization = record.event_log_entry.asset_materialization
        if materialization is not None and materialization.asset_key == candidate_model.key:
            return materialization.metadata["version"].value
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=candidate_model.key, asset_partitions=[context.partition_key]), limit=1
    ).records
    if not records:
        raise dg.Failure(f"candidate_model has no materialization for {context.partition_key}: materialize it first")
    return records[0].asset_materialization.metadata["version"].value
