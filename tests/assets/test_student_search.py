"""student_model with the student search (issue 22): the trials, the Pareto front (table and plot),
the chosen point and why in its metadata, the study in SQLite beside the data; none of it with
tuning off."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets import metadata as md
from assets.artifact_io_manager import ArtifactFolder
from assets.model import student_model
from assets.resources import DatasetResource, StorageResource
from pipeline import studies
from pipeline.student import ARCHITECTURE_FILE, WEIGHTS_FILE
from pipeline.teacher_update import RECALL, WINDOW, Attempt, TeacherUpdate
from tests.conftest import DEFAULT_YAML


def dataset_yaml(directory: Path, tuning: bool) -> Path:
    raw = yaml.safe_load(DEFAULT_YAML.read_text())
    raw["training"]["student"]["epochs"] = 2
    raw["training"]["tuning"] = {"enabled": tuning, "student": {"trials": 2, "widths": [4, 16]}}
    path = directory / "tuned.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def materialize(trained, directory: Path, tuning: bool, teacher: TeacherUpdate | None = None) -> dg.Output:
    """``student_model`` on the trained teacher (or ``teacher``), its folder as the IO manager hands it over."""
    folder = directory / "teacher_model"
    (teacher or TeacherUpdate(trained.teacher, WINDOW, "trained", attempts=[Attempt(WINDOW, 0.0)])).save(folder)
    context = dg.build_asset_context(partition_key="2026-10-04")
    return student_model(context, training_window=trained.frame, teacher_model=ArtifactFolder(folder), retraining_policy=None,
                         dataset=DatasetResource(config_path=str(dataset_yaml(directory, tuning))),
                         storage=StorageResource(data_dir=str(directory)))


def test_a_full_retrain_with_tuning_shows_the_search(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in (studies.TUNING_STORAGE_ENV, *studies.POSTGRES_ENV):  # CI exports the scale-out server's
        monkeypatch.delenv(name, raising=False)
    output = materialize(trained, tmp_path, tuning=True)
    trials = md.records(output.metadata["search_trials"])
    assert [t["number"] for t in trials] == [0, 1] and trials[0]["warm_start"] and trials[0]["hidden"] == "64, 32"
    front = md.records(output.metadata["search_pareto_front"])
    assert front and all(t["pareto"] for t in front)
    assert "data:image/png;base64," in output.metadata["search_pareto_plot"].value
    chosen = output.metadata["search_chosen"].value
    assert output.value.search["chosen"] == chosen and output.value.quantize_first_layer == chosen["quantize_first_layer"]
    assert "budgets" in output.metadata["search_reason"].value
    assert (tmp_path / "tuning" / "optuna.db").is_file()


def test_tuning_off_shows_no_search(trained, tmp_path: Path):
    output = materialize(trained, tmp_path, tuning=False)
    assert not [key for key in output.metadata if key.startswith("search")]
    assert output.value.search == {} and not (tmp_path / "tuning").exists()


def test_a_recalled_teacher_brings_its_versions_student_untrained(trained, tmp_path: Path):
    """Distilled afresh on a window of the rule that just ended, a recalled teacher's student fell to
    0.457 macro-F1 where the teacher read 0.867 (the recurring held-out stream)."""
    kept = tmp_path / "kept"
    trained.student.save(kept)
    StorageResource(data_dir=str(tmp_path)).registry.register(
        "v20261001-past", {name: kept / name for name in (WEIGHTS_FILE, ARCHITECTURE_FILE)}, {"lineage": {"partition": "2026-10-01"}})
    recalled = TeacherUpdate(trained.teacher, RECALL, "the rule came back", attempts=[Attempt(RECALL, 0.1, params={"version": "v20261001-past"})])
    output = materialize(trained, tmp_path, tuning=False, teacher=recalled)
    assert output.value.start == "recalled with its teacher from v20261001-past" and output.value.history == trained.student.history
    for mine, theirs in zip(output.value.model.state_dict().values(), trained.student.model.state_dict().values(), strict=True):
        assert (mine == theirs).all()
