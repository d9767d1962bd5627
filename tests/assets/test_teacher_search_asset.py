"""teacher_model with tuning on (issue 22): the search's trials, history, importances and chosen
parameters in its metadata, its study in the data folder's SQLite file."""

import datetime as dt

import dagster as dg
import optuna
import yaml

from assets import metadata as md
from assets.model import teacher_model
from assets.resources import DatasetResource, StorageResource
from pipeline import studies
from tests.conftest import write_small_dataset
from tests.support.helpers import days_from, training_frame


def test_a_tuned_teacher_shows_its_search(tmp_path, monkeypatch, config):
    for name in (studies.TUNING_STORAGE_ENV, *studies.POSTGRES_ENV):
        monkeypatch.delenv(name, raising=False)
    path = write_small_dataset(tmp_path, devices_per_site=10)
    raw = yaml.safe_load(path.read_text())
    raw["training"]["tuning"] = {"enabled": True, "teacher": {"trials": 6, "budget_seconds": 30}}
    path.write_text(yaml.safe_dump(raw))
    small = config.model_copy(update={"simulator": config.simulator.model_copy(update={"devices_per_site": 10})})
    frame = training_frame(small, days_from(dt.date(2026, 10, 1), 3))
    storage = StorageResource(data_dir=str(tmp_path / "data"), dataset_path=str(path))
    output = teacher_model(dg.build_asset_context(partition_key="2026-10-03"), training_window=frame, retraining_policy=None,
                           dataset=DatasetResource(config_path=str(path)), storage=storage)
    meta, search = output.metadata, output.value.search
    trials = md.records(meta["search_trials"])
    assert [t["number"] for t in trials] == list(range(6)) and trials[0]["warm_start"] and meta["method"].text == "window"
    assert [t["best"] for t in trials] == [md.rounded(h["best"]) for h in search.history()]
    assert meta["search"].text == search.reason and meta["search_params"].data == search.params
    assert meta["search_history"].md_str.startswith("![validation multi_logloss per trial")
    importances = meta["search_importances"]
    assert isinstance(importances, dg.TableMetadataValue) or "fewer than" in importances.text
    assert str(tmp_path / "data" / "tuning" / "optuna.db") in meta["search_study"].text
    assert len(optuna.load_study(study_name="broadband_cpe/teacher", storage=studies.storage(storage.tuning_storage_url)).trials) == 6
