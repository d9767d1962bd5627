"""What a registry version records beside its files: the drift reference rows, the code version, and
the lineage with the hyper-parameters the models actually ran with."""

import json
from pathlib import Path

import polars as pl

from pipeline import features as feature_lib, sample_sizes
from pipeline.code_version import code_version
from pipeline.dataset import TIMESTAMP
from pipeline.evaluation import EVALUATION_FILE, EvaluationReport, evaluate_models
from pipeline.lineage import version_entry
from pipeline.reference_rows import reference_rows
from pipeline.registry import REFERENCE_FILE
from pipeline.student import ARCHITECTURE_FILE
from pipeline.teacher import PREPROCESSING_FILE
from pipeline.teacher_update import CONTINUE, UPDATE_FILE, Attempt, TeacherUpdate
from pipeline.training_set import AUGMENTED, PROVENANCE


def test_the_code_version_follows_the_sources_and_nothing_else(tmp_path: Path):
    for name in ("pipeline/a.py", "assets/b.py", "pipeline/evergreen_edge.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(f"# {name}\n")
    first = code_version(tmp_path)
    (tmp_path / "pipeline" / "notes.txt").write_text("not code")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.py").write_text("# a test")
    assert code_version(tmp_path) == first and len(first) == 12
    (tmp_path / "pipeline" / "evergreen_edge.py").write_text("# changed\n")
    assert code_version(tmp_path) != first


def test_reference_rows_are_the_newest_days_model_inputs_without_augmented_rows(trained):
    config, frame = trained.config, trained.frame
    augmented = frame.head(50).with_columns(pl.lit(AUGMENTED).alias(PROVENANCE))
    rows = reference_rows(pl.concat([frame, augmented]), config)
    numeric, categorical = feature_lib.model_feature_names(config)
    assert rows.columns == [TIMESTAMP, *numeric, *categorical]
    days = sorted(frame[TIMESTAMP].dt.date().unique())
    newest = days[-sample_sizes.measured(frame, config).reference_days:]
    assert set(rows[TIMESTAMP].dt.date().unique()) == set(newest)
    assert rows.height == min(frame.filter(pl.col(TIMESTAMP).dt.date().is_in(newest)).height, config.feedback.drift.reference_max_rows)
    capped = config.model_copy(update={"feedback": config.feedback.model_copy(update={
        "drift": config.feedback.drift.model_copy(update={"reference_max_rows": 100})})})
    assert reference_rows(frame, capped).height == 100


def test_the_lineage_records_the_hyper_parameters_the_models_ran_with(trained, tmp_path: Path):
    config, frame, teacher, student = trained.config, trained.frame, trained.teacher, trained.student
    continued = {**config.training.teacher.model_dump(mode="json"), "learning_rate": 0.1, "rounds": 40}
    TeacherUpdate(teacher, CONTINUE, "continue is best", attempts=[Attempt(CONTINUE, 1.0, params=continued)]).save(tmp_path)
    student.save(tmp_path)
    EvaluationReport(evaluate_models(frame, teacher, student, config)).save(tmp_path)
    reference_rows(frame, config).write_parquet(tmp_path / REFERENCE_FILE)
    files = {name: tmp_path / name for name in (PREPROCESSING_FILE, UPDATE_FILE, ARCHITECTURE_FILE, EVALUATION_FILE, REFERENCE_FILE)}
    entry = version_entry(files, frame, "2026-10-04", "run-1", "2026-10-02", config)
    lineage = entry["lineage"]
    assert lineage["params"]["teacher"] == continued
    assert lineage["params"]["student"] == student.hyperparameters == config.training.student.model_dump(mode="json")
    assert lineage["params"]["seed"] == config.training.seed  # the rest as configured
    assert lineage["teacher_update"] == {"method": CONTINUE, "reason": "continue is best"}
    assert (lineage["partition"], lineage["run_id"], lineage["change_day"]) == ("2026-10-04", "run-1", "2026-10-02")
    assert lineage["trained_through"] == str(max(frame[TIMESTAMP].dt.date()))
    assert entry["preprocessing"] == teacher.preprocessing


def test_models_saved_before_the_effective_values_were_kept_record_the_configured_ones(trained, tmp_path: Path):
    """A data directory of an older release: update.json without params, student.json without them."""
    config, frame, teacher, student = trained.config, trained.frame, trained.teacher, trained.student
    TeacherUpdate(teacher, CONTINUE, "older", attempts=[Attempt(CONTINUE, 1.0)]).save(tmp_path)
    old = json.loads((tmp_path / UPDATE_FILE).read_text())
    (tmp_path / UPDATE_FILE).write_text(json.dumps({k: v for k, v in old.items() if k != "params"}))
    student.save(tmp_path)
    meta = json.loads((tmp_path / ARCHITECTURE_FILE).read_text())
    (tmp_path / ARCHITECTURE_FILE).write_text(json.dumps({k: v for k, v in meta.items() if k != "hyperparameters"}))
    EvaluationReport(evaluate_models(frame, teacher, student, config)).save(tmp_path)
    reference_rows(frame, config).write_parquet(tmp_path / REFERENCE_FILE)
    files = {name: tmp_path / name for name in (PREPROCESSING_FILE, UPDATE_FILE, ARCHITECTURE_FILE, EVALUATION_FILE, REFERENCE_FILE)}
    params = version_entry(files, frame, "2026-10-04", "run-1", None, config)["lineage"]["params"]
    assert params == config.training.model_dump(mode="json")
