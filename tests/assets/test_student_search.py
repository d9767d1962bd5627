"""student_model with the student search (issue 22): the trials, the Pareto front (table and plot),
the chosen point and why in its metadata, the study in SQLite beside the data; none of it with
tuning off."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets import metadata as md
from assets.model import student_model
from assets.resources import DatasetResource, StorageResource
from pipeline import studies
from tests.conftest import DEFAULT_YAML


def dataset_yaml(directory: Path, tuning: bool) -> Path:
    raw = yaml.safe_load(DEFAULT_YAML.read_text())
    raw["training"]["student"]["epochs"] = 2
    raw["training"]["tuning"] = {"enabled": tuning, "student": {"trials": 2, "widths": [4, 16]}}
    path = directory / "tuned.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def materialize(trained, directory: Path, tuning: bool) -> dg.Output:
    context = dg.build_asset_context(partition_key="2026-10-04")
    return student_model(context, training_window=trained.frame, teacher_model=trained.teacher, retraining_policy=None,
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
