"""Deployment layer: ONNX export (fp32 and int8) with parity gates, registration as a candidate with
its release gates, release to a canary fraction of the sites or to all, the signed edge package."""

import datetime as dt
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from assets import metadata as md
from assets.artifact_io_manager import ARTIFACT_IO_MANAGER, ArtifactFolder
from assets.common import actor, released_package
from assets.partitions import DAILY
from assets.resources import DatasetResource, StorageResource
from pipeline import atomic, causes, evergreen_edge, export, quantize, release, sample_sizes
from pipeline.calibration import CALIBRATION_FILE, calibrate_student
from pipeline.dataset import LABEL, CanarySpec, DatasetConfig
from pipeline.encoding import label_codes, student_matrix
from pipeline.evaluation import EVALUATION_FILE, judged_test_rows
from pipeline.lineage import version_entry
from pipeline.policy import Decision
from pipeline.reference_rows import reference_rows
from pipeline.registry import CANDIDATE, PRODUCTION, REFERENCE_FILE, Canary, Registry, Version
from pipeline.student import ARCHITECTURE_FILE, WEIGHTS_FILE, Student, held_out_rows
from pipeline.teacher import MODEL_FILE, PREPROCESSING_FILE, Teacher
from pipeline.teacher_update import UPDATE_FILE
from pipeline.training_set import SPLIT, TEST

GROUP = "deployment"

@dg.asset(
    group_name=GROUP, partitions_def=DAILY, io_manager_key=ARTIFACT_IO_MANAGER,
    check_specs=[
        dg.AssetCheckSpec("torch_parity", asset="onnx_student", blocking=True,
                          description="ONNX Runtime reproduces torch's probabilities on held-out rows"),
        dg.AssetCheckSpec("int8_accuracy", asset="onnx_student",
                          description="the int8 model loses at most the configured macro-F1 against fp32 on held-out rows; "
                                      "when it loses more, the version ships its fp32 model only (a warning, not a block)"),
    ],
)
def onnx_student(training_window: pl.DataFrame, student_model: Student, teacher_model: Teacher, dataset: DatasetResource):
    """The student exported to fp32 ONNX (dynamic batch) and quantized to static int8 (QDQ, scales
    calibrated on training rows; the first layer too when the student search chose it), both
    checked on rows the student never learned from (``held_out_rows``): fp32 against torch (a failure blocks everything
    downstream), int8 against fp32. An int8 model that loses too much is not kept: the version ships
    fp32 alone, a larger and slower model on the device (the package gate still holds it to the size and
    latency budgets), instead of serving nothing new. The models are built in a scratch folder; the
    artifact IO manager publishes them."""
    config, student, preprocessing = dataset.load(), student_model, teacher_model.preprocessing
    with tempfile.TemporaryDirectory() as scratch:
        fp32, int8 = Path(scratch) / export.ONNX_FILE, Path(scratch) / quantize.INT8_FILE
        calibration = quantize.calibration_rows(training_window, config.training.seed)
        quantize.export_student(student, fp32, int8, student_matrix(calibration, preprocessing))
        held_out = held_out_rows(training_window, student)
        matrix = student_matrix(held_out, preprocessing)
        parity = export.check_parity(student, fp32, matrix)
        int8_vs_fp32 = quantize.compare(fp32, int8, matrix, label_codes(held_out, config.classes))
        int8_gate = release.int8_gate(int8_vs_fp32, len(config.classes), config.deployment.gates)
        models = quantize.OnnxStudent(fp32.read_bytes(), int8.read_bytes() if int8_gate.passed else None)
    yield dg.Output(models, metadata={
        "fp32_bytes": int8_vs_fp32.fp32_bytes, "int8_bytes": int8_vs_fp32.int8_bytes, "opset": export.OPSET,
        "calibration_rows": calibration.height, "shipped": "int8" if int8_gate.passed else "fp32",
        "checked_on": f"{held_out[SPLIT][0] if held_out.height else 'no'} split ({held_out.height} rows)",
    })
    yield dg.AssetCheckResult(check_name="torch_parity", passed=parity.ok(), metadata={
        "rows": parity.rows, "max_abs_diff": md.metric(parity.max_abs_diff),
        "argmax_agreement": md.metric(parity.argmax_agreement),
    })
    yield _check_result(int8_gate, dg.AssetCheckSeverity.WARN)


def _check_result(gate: release.Gate, severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(check_name=gate.name, passed=gate.passed, description=gate.description, severity=severity,
                               metadata={k: md.metric(float(v)) if isinstance(v, (float, np.floating)) else v
                                         for k, v in gate.metadata.items()})


GATES = {
    "quality_floor": "the shipped student's macro-F1 on the test split reaches the configured floor",
    "no_regression": "no worse than production, beyond a tolerance, on the newest labelled test rows",
    "package_budget": "the signed package fits the size budget and predicts a row within the latency budget",
}


@dg.asset(
    group_name=GROUP, partitions_def=DAILY,
    check_specs=[dg.AssetCheckSpec(name, asset="candidate_model", blocking=True, description=text) for name, text in GATES.items()],
)
def candidate_model(context: dg.AssetExecutionContext, training_window: pl.DataFrame, teacher_model: ArtifactFolder,
                    student_model: ArtifactFolder, onnx_student: ArtifactFolder, evaluation: ArtifactFolder,
                    retraining_policy: Decision | None, dataset: DatasetResource, storage: StorageResource):
    """Registers this run's teacher, students (fp32 ONNX, and int8 when it passed its check) and evaluation as a new registry
    version with its lineage (the days, sites and rows it learned from, the hyper-parameters the
    models were fitted with after the policy's adaptation, seed, code version, run), aliased
    ``candidate``, and builds its signed package. The models arrive as their folders: the registry
    copies their files as written. The gates are blocking checks: a candidate that fails one is
    registered but never released."""
    key, config = context.partition_key, dataset.load()
    registry = storage.registry
    reference = storage.artifact_dir("candidate_model", key) / REFERENCE_FILE
    rows = reference_rows(training_window, config)
    with atomic.atomic_path(reference) as tmp:
        rows.write_parquet(tmp)
    teacher = Teacher.load(teacher_model.path)
    calibration = storage.artifact_dir("candidate_model", key) / CALIBRATION_FILE
    student = Student.load(student_model.path)
    calibrate_student(student, held_out_rows(training_window, student), teacher.preprocessing, config.classes).save(calibration)
    attribution = storage.artifact_dir("candidate_model", key) / causes.REFERENCE_ATTRIBUTION_FILE
    causes.save_reference_contributions(causes.reference_contributions(
        teacher, rows, config.feedback.estimate.contribution_rows, config.training.seed), teacher, attribution)
    files = {
        **{name: teacher_model.path / name for name in (MODEL_FILE, PREPROCESSING_FILE, UPDATE_FILE)},
        **{name: student_model.path / name for name in (WEIGHTS_FILE, ARCHITECTURE_FILE)},
        **{name: onnx_student.path / name for name in (export.ONNX_FILE, quantize.INT8_FILE) if (onnx_student.path / name).exists()},
        EVALUATION_FILE: evaluation.path / EVALUATION_FILE, REFERENCE_FILE: reference, CALIBRATION_FILE: calibration,
        causes.REFERENCE_ATTRIBUTION_FILE: attribution,
    }
    change_day = retraining_policy.change_day if retraining_policy else None
    version = registry.register(f"v{key.replace('-', '')}-{context.run.run_id[:8]}", files,
                                version_entry(files, training_window, key, context.run.run_id, change_day, config))
    newer = registry.point_unless_newer(CANDIDATE, version.version, reason=f"registered by run {context.run.run_id}", by=actor(context))
    package, sha256 = released_package(storage, version)
    yield dg.MaterializeResult(metadata={
        "version": version.version, "path": dg.MetadataValue.path(str(version.directory)),
        "candidate_alias": newer.version if newer else version.version,
        "student_macro_f1": md.metric(version.entry["metrics"]["student"]["macro_f1"]),
        "package": dg.MetadataValue.path(str(package)), "package_sha256": sha256,
    })
    for gate in _gates(version, training_window, package, storage, config, retraining_policy.change_date if retraining_policy else None):
        yield _check_result(gate)


def _gates(version: Version, training_set: pl.DataFrame, package: Path, storage: StorageResource,
           config: DatasetConfig, change_day: dt.date | None) -> list[release.Gate]:
    """The shipped model (int8, else fp32) judged alone, against production, and as a device receives it. After a
    confirmed change of the label rule it is compared with production on the test rows since it, and
    the quality floor, a guard against a broken model, is met on the whole test split or on those rows
    (``release.quality_gate``)."""
    spec, registry = config.deployment.gates, storage.registry
    shipped = release.predictor(version)
    test = training_set.filter(pl.col(SPLIT) == TEST)
    judged = judged_test_rows(training_set, change_day)
    scored = {f"the {test.height} test rows": test}
    if judged.height < test.height:
        scored[f"the {judged.height} test rows since the change"] = judged
    quality = {name: release.macro_f1(rows[LABEL].to_numpy(), shipped(rows), config.classes) for name, rows in scored.items()}
    production = registry.get(PRODUCTION) if registry.has_alias(PRODUCTION) else None
    champion = release.predictor(production) if production else None
    rows = release.newest_test_rows(judged, sample_sizes.measured(training_set, config).regression_days)
    latency = release.single_row_latency_us(package, storage.public_key_path, test.head(200))
    return [
        release.quality_gate(quality, spec),
        release.regression_gate(rows, shipped, champion, config.classes, spec),
        release.package_gate(package.stat().st_size, latency, spec),
    ]


def verified_manifest(storage: StorageResource, package: Path) -> dict:
    """The package's manifest, once the edge runtime has checked its signature and every hash."""
    return evergreen_edge.verify_package(package, evergreen_edge.trusted_public_key(storage.public_key_path)).manifest


@dg.asset(group_name=GROUP, partitions_def=DAILY, deps=[candidate_model])
def production_model(context: dg.AssetExecutionContext, training_window: pl.DataFrame, dataset: DatasetResource,
                     storage: StorageResource) -> dg.MaterializeResult:
    """Releases this run's candidate once its blocking checks have passed: the first model becomes
    production at once; later ones start a gray release on a fraction of the sites (the canary
    sensor rolls it out or back when the window ends), or, with ``canary.fraction: 0``, become
    production directly (the replaced version is ``previous``). A fix for a confirmed change of the
    label rule that already beats production on the held-out rows since the change starts on the larger
    ``canary.fix_fraction``. An older day's candidate than the one serving (a backfill) is registered
    but not released."""
    registry = storage.registry
    version = registry.get(_registered_version(context))
    spec = dataset.load().deployment.canary
    plan = _gray_release(version, training_window, spec, registry)
    canary, how = _canary(version, plan, registry, context.partition_key, spec.window_days)
    done = registry.release(version.version, canary, reason=f"released by run {context.run.run_id}", by=actor(context))
    metadata = {"released_to": done.to, "production": registry.resolve(PRODUCTION), "gray_release": plan.reason + how}
    if done.to == "none":
        metadata["reason"] = f"{done.newer} serves and is of a newer day than {version.version}"
    elif done.to == "canary":
        metadata.update({"canary_sites": ", ".join(canary.sites), "canary_window": f"{canary.first_day} .. {canary.last_day}"})
    else:
        metadata["previous"] = done.replaced or ""
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(group_name=GROUP, partitions_def=DAILY, deps=[production_model])
def edge_package(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """The final asset: the signed package of this run's version, as the sites that run it receive
    it. It holds the int8 (when kept) and fp32 ONNX students, a manifest (version, feature order, preprocessing
    constants, classes, metrics, sha256 of every file) signed with Ed25519, and a runtime that needs
    only numpy and onnxruntime; it is verified here exactly as a device verifies it."""
    registry = storage.registry
    version = registry.get(_registered_version(context))
    path, sha256 = released_package(storage, version)
    manifest = verified_manifest(storage, path)
    canary = registry.canary()
    served_by = ("all sites" if registry.resolve(PRODUCTION) == version.version
                 else ", ".join(canary.sites) if canary and canary.version == version.version else "no site")
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(path)), "version": version.version, "bytes": path.stat().st_size,
        "sha256": sha256, "served_to": served_by,
        "student_macro_f1": md.metric(manifest["metrics"]["macro_f1"]),
    })


def _gray_release(version: Version, training_window: pl.DataFrame, spec: CanarySpec, registry: Registry) -> release.GrayRelease:
    """How large a gray release ``version`` starts with (no production yet: it serves everywhere anyway)."""
    if not spec.fraction or not registry.has_alias(PRODUCTION):
        return release.GrayRelease(spec.fraction, "no gray release")
    change_day = version.entry["lineage"].get("change_day")
    return release.gray_release(spec, training_window, dt.date.fromisoformat(change_day) if change_day else None,
                                release.predictor(version), release.predictor(registry.get(PRODUCTION)))


def _canary(version: Version, plan: release.GrayRelease, registry: Registry, day: str,
            window_days: int) -> tuple[Canary | None, str]:
    """The gray release ``version`` starts (none: it serves every site), and how it was chosen: a
    retrain for a change of the label rule takes over a running canary that is one too."""
    sites = release.canary_sites(version.entry["lineage"]["sites"], plan.fraction, version.version) if plan.fraction else ()
    if not sites:
        return None, ""
    running = registry.canary()
    running_change = registry.get(running.version).entry["lineage"].get("change_day") if running else None
    taken = release.take_over_canary(running, running_change, version.version, version.entry["lineage"].get("change_day"),
                                     sites, day)
    if taken is None:
        return Canary(version.version, sites, day, window_days), ""
    return taken, (f"; takes over the gray release of {running.version} (also a retrain for a change of the label rule) "
                   f"on {', '.join(taken.sites)}, window to {taken.last_day}, judged on the rows served from {taken.judged_from}")


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
