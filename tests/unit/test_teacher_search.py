"""The teacher's parameter search (issue 22): TPE within its trials and seconds, warm-started from the
production parameters, pruned, persisted so that a later search continues the study; off, nothing changes."""

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import lightgbm as lgb
import optuna
import polars as pl
import pytest

from pipeline import studies, teacher_search
from pipeline.dataset import SEARCHED_TEACHER_PARAMS, DatasetConfig, TeacherSearchSpec
from pipeline.encoding import fit_preprocessing
from pipeline.evaluation import EVALUATION_FILE, EvaluationReport, evaluate_models
from pipeline.features import model_feature_names
from pipeline.lineage import version_entry
from pipeline.policy import FULL, Decision
from pipeline.reference_rows import reference_rows
from pipeline.registry import REFERENCE_FILE
from pipeline.student import ARCHITECTURE_FILE
from pipeline.teacher import PREPROCESSING_FILE, lightgbm_dataset, production_params
from pipeline.teacher_update import UPDATE_FILE, continued_spec, update_teacher
from pipeline.training_set import SPLIT, TRAIN, VALIDATION
from tests.support.helpers import days_from, training_frame

PRODUCTION = {"num_leaves": 12, "learning_rate": 0.15, "min_data_in_leaf": 30, "lambda_l2": 0.5, "feature_fraction": 0.8}
CONFIGURED = {"num_leaves": 31, "learning_rate": 0.05, "min_data_in_leaf": 20, "lambda_l2": 1e-3, "feature_fraction": 1.0}
"""The YAML's parameters as a warm start: its lambda_l2 of 0 is below the log-scale range, so it starts from the low end."""
FULL_RETRAIN = Decision(FULL, "concept change", dt.date(2026, 10, 3), None, None, 0.0, {}, {})


@pytest.fixture(scope="module")
def small(config) -> DatasetConfig:
    return config.model_copy(update={"simulator": config.simulator.model_copy(update={"devices_per_site": 10})})


@pytest.fixture(scope="module")
def frame(small) -> pl.DataFrame:
    return training_frame(small, days_from(dt.date(2026, 10, 1), 3))


def tuned(config: DatasetConfig, enabled: bool = True, **search) -> DatasetConfig:
    tuning = config.training.tuning.model_copy(update={
        "enabled": enabled, "teacher": TeacherSearchSpec.model_validate({**config.training.tuning.teacher.model_dump(), **search})})
    return config.model_copy(update={"training": config.training.model_copy(update={"tuning": tuning})})


def test_the_search_keeps_the_best_trial_of_its_trials_within_the_ranges(small, frame):
    found = teacher_search.search_teacher(frame, tuned(small, trials=6))
    assert [t["number"] for t in found.trials] == list(range(6))
    complete = [t for t in found.trials if t["state"] == "complete"]
    best = min(complete, key=lambda t: t["value"])
    assert found.chosen_trial == best["number"] and found.teacher.booster.best_score["valid_0"]["multi_logloss"] == best["value"]
    spec = small.training.tuning.teacher
    for t in found.trials:
        assert all(getattr(spec, name)[0] <= t["params"][name] <= getattr(spec, name)[1] for name in SEARCHED_TEACHER_PARAMS)
    assert {k: found.params[k] for k in SEARCHED_TEACHER_PARAMS} == best["params"]
    assert found.params["rounds"] == small.training.teacher.rounds  # not searched: early stopping picks the trees
    history = found.history()
    assert [h["best"] for h in history] == sorted((h["best"] for h in history), reverse=True) and history[-1]["best"] == best["value"]
    assert found.storage == "in memory" and "trial" in found.reason


def test_the_budget_in_seconds_stops_the_search_before_its_trials(small, frame):
    found = teacher_search.search_teacher(frame, tuned(small, trials=500, budget_seconds=1.0))
    assert 1 <= len(found.trials) < 500 and {t["state"] for t in found.trials} <= {"complete", "pruned"}
    assert found.seconds < 1.0 + 5  # a trial under way when the budget runs out finishes (well under 5 s here)


def test_trial_zero_is_the_warm_start_from_the_production_parameters_or_the_yaml(small, frame):
    warm = teacher_search.search_teacher(frame, tuned(small, trials=1), production=PRODUCTION)
    [first] = warm.trials
    assert first["warm_start"] == "production" and first["params"] == PRODUCTION
    assert warm.warm_starts[0] == {"source": "production", "params": PRODUCTION} and warm.warm_starts[1]["source"] == "configured"
    assert warm.chosen_warm_start == "production" and "a warm start (production parameters)" in warm.reason
    cold = teacher_search.search_teacher(frame, tuned(small, trials=1))
    assert cold.trials[0]["params"] == CONFIGURED
    assert cold.warm_starts[0]["source"] == "configured"


def test_the_production_parameters_are_read_back_from_the_saved_model(small, frame):
    found = teacher_search.search_teacher(frame, tuned(small, trials=1), production=PRODUCTION)
    loaded = lgb.Booster(model_str=found.teacher.booster.model_to_string())
    assert production_params(loaded) == PRODUCTION


def test_a_second_search_continues_the_study_persisted_in_sqlite_from_its_best_parameters(small, frame, tmp_path):
    url = f"sqlite:///{tmp_path / 'tuning' / 'optuna.db'}"
    config = tuned(small, trials=3)
    first = teacher_search.search_teacher(frame, config, storage_url=url)
    second = teacher_search.search_teacher(frame, tuned(small, trials=4), production=PRODUCTION, storage_url=url)
    assert first.study_trials == 3 and second.study_trials == 7 and second.study == "broadband_cpe/teacher"
    study = optuna.load_study(study_name=second.study, storage=studies.storage(url))
    assert len(study.trials) == 7 and (tmp_path / "tuning" / "optuna.db").is_file()
    # the production parameters first, the YAML's, then the best of the earlier search, re-tried on these rows
    best_of_first = {k: first.params[k] for k in SEARCHED_TEACHER_PARAMS}
    expected = [PRODUCTION, CONFIGURED] + ([best_of_first] if best_of_first != CONFIGURED else [])
    assert [t["params"] for t in second.trials[:len(expected)]] == expected
    assert [t["warm_start"] for t in second.trials[:2]] == ["production", "configured"]
    assert all(t["value"] is not None for t in second.trials[:len(expected)])  # scored again here, not taken from the history


def test_trials_worse_than_the_median_of_the_search_are_pruned_never_the_warm_start(small, frame):
    found = teacher_search.search_teacher(frame, tuned(small, trials=12))
    pruned = [t for t in found.trials if t["state"] == "pruned"]
    assert pruned and all(not t["warm_start"] and t["value"] is None for t in pruned)
    warmup = small.training.teacher.early_stopping_rounds
    assert all(t["last_step"] >= warmup for t in pruned)
    assert found.trials[0]["state"] == "complete"


def test_importances_need_enough_completed_trials(small, frame):
    few = teacher_search.search_teacher(frame, tuned(small, trials=2))
    assert few.importances == {}
    many = teacher_search.search_teacher(frame, tuned(small, trials=12))
    assert set(many.importances) == set(SEARCHED_TEACHER_PARAMS) and sum(many.importances.values()) == pytest.approx(1, abs=1e-3)


def test_tuning_disabled_trains_exactly_the_teacher_of_before(small, frame):
    """Byte for byte the model LightGBM trains from the parameters the teacher had before tuning existed."""
    update = update_teacher(frame, None, None, FULL_RETRAIN, small)
    assert update.search is None and "search" not in update.to_json()
    assert update.params == small.training.teacher.model_dump(mode="json")
    spec, seed = small.training.teacher, small.training.seed
    before = {"objective": "multiclass", "num_class": len(small.classes), "learning_rate": spec.learning_rate,
              "num_leaves": spec.num_leaves, "min_data_in_leaf": spec.min_data_in_leaf, "seed": seed,
              "deterministic": True, "num_threads": 1, "verbose": -1}
    train, validation = frame.filter(pl.col(SPLIT) == TRAIN), frame.filter(pl.col(SPLIT) == VALIDATION)
    preprocessing = fit_preprocessing(train, *model_feature_names(small))
    train_set = lightgbm_dataset(train, preprocessing, small.classes)
    booster = lgb.train(before, train_set, num_boost_round=spec.rounds,
                        valid_sets=[lightgbm_dataset(validation, preprocessing, small.classes, train_set)],
                        callbacks=[lgb.early_stopping(spec.early_stopping_rounds, verbose=False)])
    assert update.teacher.booster.model_to_string() == booster.model_to_string()


def test_a_full_retrain_with_tuning_keeps_the_searched_teacher_and_records_its_parameters(small, frame):
    update = update_teacher(frame, None, None, FULL_RETRAIN, tuned(small, trials=3))
    assert update.search is not None and update.teacher is update.search.teacher
    assert update.params == update.search.params and update.to_json()["search"]["chosen_trial"] == update.search.chosen_trial
    assert "parameters searched: trial" in update.reason and update.attempts[-1].seconds >= update.search.seconds


def test_incremental_updates_keep_the_production_parameters_when_tuning_is_on(small):
    continued = continued_spec(tuned(small), 0.075, 60, PRODUCTION)  # the policy raised the YAML's 0.05 by half
    assert continued.num_leaves == 12 and continued.min_data_in_leaf == 30 and continued.lambda_l2 == 0.5
    assert continued.learning_rate == pytest.approx(0.225) and continued.rounds == 60  # production's 0.15, raised by half
    assert continued_spec(small, 0.075, 60) == small.training.teacher.model_copy(update={"learning_rate": 0.075, "rounds": 60})


def test_search_ranges_are_checked():
    with pytest.raises(ValueError, match="positive and ordered"):
        TeacherSearchSpec(num_leaves=(64, 8))
    with pytest.raises(ValueError, match="at most 1"):
        TeacherSearchSpec(feature_fraction=(0.5, 1.5))


def test_the_default_study_storage_follows_the_environment(tmp_path, monkeypatch):
    for name in (studies.TUNING_STORAGE_ENV, *studies.POSTGRES_ENV):
        monkeypatch.delenv(name, raising=False)
    assert studies.default_url(tmp_path) == f"sqlite:///{tmp_path}/tuning/optuna.db"
    for name, value in zip(studies.POSTGRES_ENV, ("db.local", "5432", "evergreen", "s3cret", "evergreen"), strict=True):
        monkeypatch.setenv(name, value)
    url = studies.default_url(tmp_path)
    assert url == "postgresql+psycopg2://evergreen:s3cret@db.local:5432/evergreen" and "s3cret" not in studies.shown(url)
    monkeypatch.setenv(studies.TUNING_STORAGE_ENV, "sqlite:////srv/optuna.db")
    assert studies.default_url(tmp_path) == "sqlite:////srv/optuna.db"


def test_the_lineage_records_the_chosen_trial_and_why(trained, tmp_path):
    config, frame, student = trained.config, trained.frame, trained.student
    update = update_teacher(frame, None, None, FULL_RETRAIN, tuned(config, trials=2))
    update.save(tmp_path)
    student.save(tmp_path)
    EvaluationReport(evaluate_models(frame, update.teacher, student, config)).save(tmp_path)
    reference_rows(frame, config).write_parquet(tmp_path / REFERENCE_FILE)
    files = {name: tmp_path / name for name in (PREPROCESSING_FILE, UPDATE_FILE, ARCHITECTURE_FILE, EVALUATION_FILE, REFERENCE_FILE)}
    lineage = version_entry(files, frame, "2026-10-04", "run-1", None, config)["lineage"]
    assert lineage["params"]["teacher"] == update.search.params
    search = lineage["teacher_update"]["search"]
    assert (search["chosen_trial"], search["study"], search["params"]) == (update.search.chosen_trial, "broadband_cpe/teacher", update.search.params)
    assert search["reason"] == update.search.reason and search["warm_starts"][0]["source"] == "configured"


def test_two_searches_on_one_new_sqlite_file_take_turns(small, frame, tmp_path):
    """Side by side, both would create its tables (one fails) or take the same warm-start trial."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    with ThreadPoolExecutor(2) as pool:
        searches = list(pool.map(lambda _: teacher_search.search_teacher(frame, tuned(small, trials=3), storage_url=url), range(2)))
    assert sorted(s.study_trials for s in searches) == [3, 6] and all(s.trials[0]["warm_start"] for s in searches)
