"""Incremental teacher updates on real simulated windows: the best update is chosen on the newest
validation rows, and one that forgets the older window is rejected for a full retrain."""

import dataclasses
import datetime as dt

import polars as pl
import pytest

from pipeline import recall, teacher_update
from pipeline.dataset import LABEL, TIMESTAMP, RecallSpec
from pipeline.policy import FULL, INCREMENTAL, Decision
from pipeline.teacher import fit_teacher
from tests.support.helpers import days_from, training_frame

PRODUCTION_DAYS = days_from(dt.date(2026, 9, 1), 4)
WINDOW = days_from(dt.date(2026, 9, 2), 6)  # three days the production model saw, three it did not
TRAINED_THROUGH = PRODUCTION_DAYS[-1]
DECISION = Decision(INCREMENTAL, "data drift", WINDOW[-1], "v1", None, 0.5, {"learning_rate": 0.05, "rounds": 60, "refit_decay": 0.8}, {})


@pytest.fixture(scope="module")
def small(config):
    """A small fleet of alike sites: the scenario (line ageing only, a production model four days
    old) is about how an update is chosen; with the default non-IID sites this small window's few
    new validation rows happen to favour the production model, and no update would be tried out."""
    simulator = config.simulator.model_copy(update={"devices_per_site": 15, "site_profiles": {}})
    return config.model_copy(update={"simulator": simulator})


@pytest.fixture(scope="module")
def production(small):
    return fit_teacher(training_frame(small, PRODUCTION_DAYS), small)


@pytest.fixture(scope="module")
def window(small):
    return training_frame(small, WINDOW)


def test_an_incremental_update_tries_refit_and_continue_and_keeps_the_best(small, production, window):
    update = teacher_update.update_teacher(window, production, TRAINED_THROUGH, DECISION, small)
    tried = {a.method: a for a in update.attempts}
    assert {teacher_update.REFIT, teacher_update.CONTINUE} <= set(tried)
    assert all(a.new_macro_f1 is not None and a.older_macro_f1 is not None for a in tried.values() if a.method != "window")
    best = max((tried[m] for m in (teacher_update.REFIT, teacher_update.CONTINUE)), key=lambda a: a.new_macro_f1)
    assert update.method == best.method and best.new_macro_f1 > update.production.new_macro_f1
    assert best.older_macro_f1 >= update.production.older_macro_f1 - small.feedback.policy.forget_tolerance
    assert update.teacher.preprocessing == production.preprocessing  # updated, not refitted from scratch


def test_an_update_that_forgets_the_older_window_is_rejected_for_a_full_retrain(small, production, window):
    """After the production model, the label rule turns around (congestion <-> none): refit and
    continue learn it and lose the older rows; the guard sends the update to a window retrain."""
    swapped = window.with_columns(
        pl.when(pl.col(TIMESTAMP).dt.date() > TRAINED_THROUGH)
        .then(pl.col(LABEL).replace({"none": "congestion", "congestion": "none"}))
        .otherwise(pl.col(LABEL)).alias(LABEL)
    )
    update = teacher_update.update_teacher(swapped, production, TRAINED_THROUGH, DECISION, small)
    assert update.method == teacher_update.WINDOW
    assert "forgot the older window" in update.reason
    assert [a.method for a in update.attempts] == [teacher_update.REFIT, teacher_update.CONTINUE, teacher_update.WINDOW]


def test_a_full_retrain_when_the_policy_says_so_or_there_is_nothing_to_update(small, production, window):
    full = teacher_update.update_teacher(window, production, TRAINED_THROUGH, dataclasses.replace(DECISION, action=FULL), small)
    assert full.method == teacher_update.WINDOW and [a.method for a in full.attempts] == [teacher_update.WINDOW]
    bootstrap = teacher_update.update_teacher(window, None, None, DECISION, small)
    assert bootstrap.method == teacher_update.WINDOW and "no production teacher" in bootstrap.reason
    nothing_new = teacher_update.update_teacher(window, production, WINDOW[-1], DECISION, small)
    assert nothing_new.method == teacher_update.WINDOW and "new labelled training rows" in nothing_new.reason


def test_an_update_records_the_hyper_parameters_it_ran_with_and_refuses_invalid_ones(small, production, window):
    update = teacher_update.update_teacher(window, production, TRAINED_THROUGH, DECISION, small)
    expected = {teacher_update.REFIT: {"refit_decay": 0.8},
                teacher_update.CONTINUE: {**small.training.teacher.model_dump(), "learning_rate": 0.05, "rounds": 60}}
    assert update.params == expected[update.method] and update.to_json()["params"] == update.params
    full = teacher_update.update_teacher(window, None, None, DECISION, small)
    assert full.params == small.training.teacher.model_dump(mode="json")  # a window retrain: the YAML's
    with pytest.raises(ValueError, match="rounds"):
        teacher_update.continued_spec(small, 0.05, "sixty")


def test_only_a_teacher_boosted_on_the_window_may_be_refitted_for_its_student(small, production, window, tmp_path):
    incremental = teacher_update.update_teacher(window, production, TRAINED_THROUGH, DECISION, small)
    full = teacher_update.update_teacher(window, None, None, DECISION, small)
    assert incremental.method in (teacher_update.REFIT, teacher_update.CONTINUE) and full.method == teacher_update.WINDOW
    for name, update in (("incremental", incremental), ("full", full)):
        (tmp_path / name).mkdir()
        update.save(tmp_path / name)
    assert teacher_update.trained_on_window(tmp_path / "full")
    assert not teacher_update.trained_on_window(tmp_path / "incremental") and not teacher_update.trained_on_window(tmp_path)


def _swapped_until(window: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """The label rule turned around (congestion <-> none) on the window's days before ``day``."""
    return window.with_columns(
        pl.when(pl.col(TIMESTAMP).dt.date() < day).then(pl.col(LABEL).replace({"none": "congestion", "congestion": "none"}))
        .otherwise(pl.col(LABEL)).alias(LABEL))


def test_a_full_retrain_for_a_rule_that_came_back_recalls_the_teacher_that_knew_it(small, production, window):
    """Four days of a turned-around rule, then the original again: the window retrain learned mostly the
    turned rule, the earlier production teacher knows the one that came back, and is recalled."""
    back = WINDOW[4]
    decision = dataclasses.replace(DECISION, action=FULL, change_day=back.isoformat())
    turned = fit_teacher(_swapped_until(window, WINDOW[-1] + dt.timedelta(days=1)), small)  # a version of the turned rule
    update = teacher_update.update_teacher(_swapped_until(window, back), production, TRAINED_THROUGH, decision, small,
                                           past={"v-turned": turned, "v-original": production})
    assert update.method == teacher_update.RECALL and update.teacher is production
    assert [a.method for a in update.attempts] == [teacher_update.WINDOW, teacher_update.RECALL]
    assert update.params == {"version": "v-original"} and "recalled the teacher of v-original" in update.reason
    # the same retrain on a stream whose rule never moved keeps its own teacher: no past one is surely better
    steady = teacher_update.update_teacher(window, production, TRAINED_THROUGH, decision, small, past={"v-original": production})
    assert steady.method == teacher_update.WINDOW
    # and without a known change (a retrain on data drift alone) nothing is recalled
    plain = dataclasses.replace(decision, change_day=None)
    assert teacher_update.update_teacher(_swapped_until(window, back), production, TRAINED_THROUGH, plain, small,
                                         past={"v-original": production}).method == teacher_update.WINDOW


def test_a_past_teacher_needs_enough_rows_and_every_input_it_was_trained_on(small, production, window):
    turned_window = _swapped_until(window, WINDOW[-1] + dt.timedelta(days=1))
    rows = turned_window.filter((pl.col(TIMESTAMP).dt.date() == WINDOW[-1]) & pl.col(LABEL).is_not_null())
    turned = fit_teacher(turned_window, small)
    found = recall.best_past(production, {"v-turned": turned}, rows, RecallSpec())
    assert found is not None and found.version == "v-turned" and found.accuracy > found.retrained_accuracy + 0.3
    assert recall.best_past(production, {"v-turned": turned}, rows.head(9), RecallSpec()) is None  # min_rows 10
    assert recall.readable(turned, rows) and not recall.readable(turned, rows.drop("uptime_h"))  # an older schema is skipped
