"""The retraining policy: when to retrain, how, with which hyper-parameters, and why."""

import datetime as dt

import polars as pl
import pytest

from pipeline import drift, policy
from pipeline.dataset import load_dataset_config
from pipeline.drift import DriftSummary
from pipeline.sample_sizes import sample_sizes
from tests.conftest import DEFAULT_YAML

DAY = dt.date(2026, 10, 17)
CONFIG = load_dataset_config(DEFAULT_YAML)
SPEC, TRAINING = CONFIG.feedback.policy, CONFIG.training
DATA_DRIFT = DriftSummary(data_drift=True, drifted_features=["firmware_version"], settled=False, severity=0.12)
CONCEPT = DriftSummary(data_drift=True, drifted_features=["firmware_version"], concept_drift=True, fresh_accuracy=0.78,
                       reference_accuracy=0.92, accuracy_drop=0.14, settled=False, severity=1.0)


def _days(*alarms: bool, version: str = "v1") -> list[policy.DayState]:
    """Earlier days, oldest first, ending the day before DAY."""
    return [policy.DayState(DAY - dt.timedelta(days=len(alarms) - i), version, a) for i, a in enumerate(alarms)]


def _decide(summary: DriftSummary, earlier: list[policy.DayState], version: str | None = "v1", days_of_data: int = 60,
            config=CONFIG) -> policy.Decision:
    return policy.decide(DAY, summary, version, earlier, 27_000, days_of_data, config)


def test_no_drift_no_retrain():
    decision = _decide(DriftSummary(), _days(False, False))
    assert decision.action == policy.NONE and not decision.retrain and decision.event_key is None


def test_no_production_model_bootstraps_a_full_retrain_once_a_window_of_data_exists():
    early = _decide(DriftSummary(), [], version=None, days_of_data=3)
    assert early.action == policy.WAIT and "(3 of 7 days)" in early.reason
    decision = _decide(DriftSummary(), [], version=None, days_of_data=7)
    assert decision.action == policy.FULL and "no production model" in decision.reason


def test_waits_while_the_inputs_still_move_then_retrains_at_the_latest_after_max_wait():
    first = _decide(DATA_DRIFT, _days(False))
    assert first.action == policy.WAIT and "day 0 of at most 2" in first.reason
    assert _decide(DATA_DRIFT, _days(False, True)).action == policy.WAIT
    third = _decide(DATA_DRIFT, _days(False, True, True))
    assert third.action == policy.INCREMENTAL and "since 2026-10-15" in third.reason
    assert first.event_key == "v1@2026-10-17" and third.event_key == "v1@2026-10-15"


def test_labels_confirming_a_change_open_their_own_run_within_the_event():
    """Labels 7 days late: the input drift of the 10-10 streak had its run days ago; when the labels
    show the rule changed, that is a second key of the same event, so the sensor launches the fix."""
    streak = _days(False, *[True] * 7)
    inputs_only = _decide(_with(DATA_DRIFT, settled=True), streak)
    confirmed = _decide(CONCEPT, streak)
    assert inputs_only.event_key == "v1@2026-10-10" and confirmed.event_key == "v1@2026-10-10/labels"
    assert confirmed.action == policy.FULL and confirmed.change_day == "2026-10-10" and not confirmed.cooldown
    small_drop = _decide(_with(CONCEPT, accuracy_drop=0.03, fresh_accuracy=0.89), streak)  # first labels: a small drop
    assert small_drop.action == policy.INCREMENTAL and small_drop.event_key == "v1@2026-10-10"  # the full one still gets its run


def test_a_settled_drift_retrains_at_once():
    settled = DriftSummary(data_drift=True, drifted_features=["device_model"], settled=True, severity=0.12)
    assert _decide(settled, _days(False)).action == policy.INCREMENTAL


def test_a_large_drop_on_fresh_labels_calls_for_a_full_retrain():
    decision = _decide(CONCEPT, _days(False, True, True))
    assert decision.action == policy.FULL and "accuracy on fresh labels fell 0.140" in decision.reason


def test_an_event_is_a_streak_under_one_production_model():
    earlier = [*_days(True, True, version="v0")[:1], *_days(True, True)[1:]]  # D-2 judged v0, D-1 judged v1
    assert policy.event_start(DAY, "v1", earlier) == DAY - dt.timedelta(days=1)
    assert policy.event_start(DAY, "v1", _days(True, False, True)) == DAY - dt.timedelta(days=1)
    assert policy.event_start(DAY, "v1", []) == DAY


@pytest.mark.parametrize(("severity", "rows"), [(0.0, 27_000), (1.0, 27_000), (0.5, 2_000), (0.5, 400_000)])
def test_hyperparameters_adapt_to_severity_and_volume(severity, rows):
    teacher, student = policy.adapted_hyperparameters(severity, rows, TRAINING, SPEC)
    assert teacher["learning_rate"] == pytest.approx(TRAINING.teacher.learning_rate * (1 + severity))
    assert 20 <= teacher["rounds"] <= TRAINING.teacher.rounds and 0.3 <= teacher["refit_decay"] <= 0.95
    assert 64 <= student["batch_size"] <= 1024 and 5 <= student["epochs"] <= 60
    assert student["batch_size"] & (student["batch_size"] - 1) == 0  # a power of two


def test_stronger_drift_adapts_more_and_more_data_means_bigger_batches():
    calm, storm = (policy.adapted_hyperparameters(s, 27_000, TRAINING, SPEC)[0] for s in (0.1, 0.9))
    assert storm["rounds"] > calm["rounds"] and storm["refit_decay"] < calm["refit_decay"]
    small, big = (policy.adapted_hyperparameters(0.5, r, TRAINING, SPEC)[1] for r in (5_000, 200_000))
    assert big["batch_size"] > small["batch_size"] and big["epochs"] <= small["epochs"]


def _report(day: dt.date, version: str, drifted: bool) -> pl.DataFrame:
    row = {"test": "latency_ms", "kind": drift.NUMERIC, "statistic": 0.3 if drifted else 0.01, "p_value": 0.0,
           "p_adjusted": 0.0 if drifted else 0.9, "effect": 0.3 if drifted else 0.01, "floor": 0.1, "n_current": 3840}
    return drift._finish(pl.DataFrame([row]), 0.01).with_columns(pl.lit(day).alias(drift.DAY), pl.lit(version).alias(drift.PRODUCTION_VERSION))


def test_decisions_from_a_window_of_reports_find_the_event_start():
    reports = pl.concat([_report(DAY - dt.timedelta(days=k), "v1", k < 3) for k in range(5, -1, -1)])
    decision = policy.decide_from_reports(DAY, reports, CONFIG)
    assert decision.production_version == "v1" and decision.event_key == "v1@2026-10-15"
    assert decision.action == policy.INCREMENTAL and "data drift in latency_ms since 2026-10-15" in decision.reason
    assert decision.student["batch_size"] == 256  # 3840 rows a day x 7 days
    quiet = policy.decide_from_reports(DAY, _report(DAY, "v1", False), CONFIG)
    assert quiet.action == policy.NONE
    first = policy.decide_from_reports(DAY, drift.empty_report(), CONFIG)
    assert first.action == policy.FULL and first.production_version is None


def test_no_alarm_with_untested_tests_says_what_was_not_tested():
    summary = DriftSummary(untested=["fresh-label accuracy (n 48 < 100)"], concept_tested=False)
    decision = _decide(summary, _days(False))
    assert decision.action == policy.NONE and decision.untested == ("fresh-label accuracy (n 48 < 100)",)
    assert "not tested" in decision.reason and "fresh-label accuracy (n 48 < 100)" in decision.reason
    assert "match the reference" in _decide(DriftSummary(), _days(False)).reason


def test_the_student_is_sized_on_rows_per_day_of_pooled_reports_and_left_to_itself_without_a_report():
    pooled = _report(DAY, "v1", False).with_columns(pl.lit(240).alias("n_current"), pl.lit(5).alias("days"))
    assert policy.decide_from_reports(DAY, pooled, CONFIG).student == {"batch_size": 64, "epochs": 60}  # 48 rows x 7 days: the cap
    assert policy.decide_from_reports(DAY, drift.empty_report(), CONFIG).student == {}  # unknown volume


def test_sample_sizes_keep_the_simulators_values_and_scale_for_48_rows_a_day():
    simulator = sample_sizes(3840, 1150, CONFIG)
    gates, canary = CONFIG.deployment.gates, CONFIG.deployment.canary
    assert (simulator.reference_days, simulator.min_new_rows, simulator.regression_days, simulator.canary_min_labels) == \
        (CONFIG.feedback.drift.reference_days, SPEC.min_new_rows, gates.regression_days, canary.min_labels)
    small = sample_sizes(48, 48, CONFIG)
    assert small.reference_days == CONFIG.partitions.window_days  # 500 rows would take 11 days: the whole window
    assert small.min_new_rows == 33  # a day's labelled training rows: 48 x 0.7
    assert small.regression_days == CONFIG.partitions.window_days  # 7.2 test rows a day
    assert small.canary_min_labels == 24  # one site of four, 48 labels a day, over a 2-day window
    assert sample_sizes(150, 150, CONFIG).reference_days == 4  # 500 rows in 4 days of 150


def test_a_label_rule_change_is_keyed_by_its_first_day_and_skips_the_cooldown():
    decision = _decide(CONCEPT, _days(False, True, True))
    assert decision.change_day == "2026-10-15" and decision.cooldown is False
    data_only = _decide(DriftSummary(data_drift=True, drifted_features=["device_model"], settled=True, severity=0.12), _days(False))
    assert data_only.change_day is None and data_only.cooldown is True


@pytest.mark.parametrize("since, follows", [(0, False), (1, True), (2, True), (3, False), (4, True), (6, False), (7, False)])
def test_after_a_change_follow_ups_come_at_doubling_intervals_until_the_window_is_filled(since, follows):
    change = DAY - dt.timedelta(days=since)
    decision = policy.decide(DAY, DriftSummary(), "v2", _days(False), 27_000, 60, CONFIG, change_day=change)
    assert (decision.action == policy.FULL) is follows  # the simulator's window is 7 days
    if follows:
        assert decision.change_day == change.isoformat() and not decision.cooldown
        assert decision.event_key == f"v2@{change.isoformat()}+{since}" and "follow-up" in decision.reason


@pytest.mark.parametrize("since, again", [(0, False), (1, True), (2, True), (3, False), (4, True)])
def test_while_production_still_serves_the_old_rule_the_fix_is_retrained_at_the_follow_up_days(since, again):
    """The simulator's roll-out: the fix of the change's first day (one day of post-change rows) went to
    a canary, production kept the old rule, and the alarm's key was spent, so no retrain learned
    from the second day, while a 3-day nightly retrain had recovered."""
    earlier = _days(*([False] + [True] * since))
    decision = _decide(CONCEPT, earlier)
    start = (DAY - dt.timedelta(days=since)).isoformat()
    assert decision.action == policy.FULL and decision.change_day == start and not decision.cooldown
    assert decision.event_key == f"v1@{start}{policy.CONFIRMED_BY_LABELS}" + (f"+{since}" if again else "")
    assert ("after the change began" in decision.reason) is again


def test_a_concept_alarm_is_not_waited_on_while_the_inputs_move():
    moving = _decide(CONCEPT, _days(False))  # the first alarm day, inputs unsettled
    assert moving.action == policy.FULL and moving.change_day == DAY.isoformat()
    small = DriftSummary(data_drift=True, drifted_features=["firmware_version"], concept_drift=True, fresh_accuracy=0.89,
                         reference_accuracy=0.92, accuracy_drop=0.03, settled=False, severity=0.5)
    update = _decide(small, _days(False))
    assert update.action == policy.INCREMENTAL and update.change_day == DAY.isoformat() and not update.cooldown
    assert _decide(DATA_DRIFT, _days(False)).action == policy.WAIT  # inputs alone still wait for the roll-out


def test_a_decision_saves_and_loads_as_the_same_typed_decision(tmp_path):
    decision = _decide(CONCEPT, _days(True, True))
    decision.save(tmp_path)
    assert policy.Decision.load(tmp_path) == decision
    assert isinstance(policy.Decision.load(tmp_path).day, dt.date)


def test_a_model_materialized_without_a_decision_is_a_full_retrain_on_request():
    decision = policy.on_request(DAY)
    assert decision.action == policy.FULL and decision.retrain and decision.change_day is None
    assert decision.reason == f"materialized on request (no policy decision for {DAY.isoformat()})"


# issue 19: the estimate of accuracy without labels decides on shifts of the inputs alone
HARMLESS = dict(estimated_accuracy=0.91, estimated_low=0.90, estimated_high=0.92, estimate_reliable=True, reference_accuracy=0.92)
HARMFUL = dict(estimated_accuracy=0.80, estimated_low=0.79, estimated_high=0.81, estimate_reliable=True,
               estimated_harm=True, reference_accuracy=0.92)


def _with(summary: DriftSummary, **estimate) -> DriftSummary:
    return DriftSummary(**{**summary.__dict__, **estimate})


def _estimate(**spec):
    return CONFIG.model_copy(update={"feedback": CONFIG.feedback.model_copy(update={
        "estimate": CONFIG.feedback.estimate.model_copy(update=spec)})})


ACTING = _estimate(acts=True)


def _estimate_off():
    return _estimate(enabled=False, acts=True)


def test_a_shift_without_estimated_harm_does_not_retrain_and_says_so():
    for summary in (_with(DATA_DRIFT, **HARMLESS), _with(DATA_DRIFT, settled=True, **HARMLESS)):
        decision = _decide(summary, _days(False, True, True), config=ACTING)
        assert decision.action == policy.NONE and decision.reason.startswith("shift without harm: data drift in firmware_version")
        assert decision.event_key is None


def test_an_estimated_drop_retrains_at_once_before_labels_confirm_it():
    decision = _decide(_with(DATA_DRIFT, **HARMFUL), _days(False), config=ACTING)  # first alarm day, inputs still moving
    assert decision.action == policy.INCREMENTAL and decision.event_key == "v1@2026-10-17"
    assert "estimated accuracy without labels 0.800 (0.790 .. 0.810) below the reference 0.920" in decision.reason
    alone = _decide(DriftSummary(**HARMFUL), _days(False), config=ACTING)  # no input test fired: the estimate is the alarm
    assert alone.retrain


def test_the_label_test_stays_the_authority_and_an_unreliable_or_disabled_estimate_changes_nothing():
    assert _decide(_with(CONCEPT, **HARMLESS), _days(False), config=ACTING).action == policy.FULL  # it cannot see a new rule
    unreliable = _with(DATA_DRIFT, **{**HARMLESS, "estimate_reliable": False})
    assert _decide(unreliable, _days(False), config=ACTING).action == policy.WAIT
    settled = _with(DATA_DRIFT, settled=True, **HARMLESS)
    off = policy.decide(DAY, settled, "v1", _days(False), 27_000, 60, _estimate_off())
    assert off.action == policy.INCREMENTAL
    assert policy.decide(DAY, _with(DATA_DRIFT, **HARMFUL), "v1", _days(False), 27_000, 60, _estimate_off()).action == policy.WAIT


def test_by_default_the_estimate_is_reported_but_the_policy_decides_from_the_tests():
    assert not CONFIG.feedback.estimate.acts
    assert _decide(_with(DATA_DRIFT, **HARMFUL), _days(False)).action == policy.WAIT
    assert _decide(DriftSummary(**HARMFUL), _days(False)).action == policy.NONE
    assert _decide(_with(DATA_DRIFT, settled=True, **HARMLESS), _days(False)).action == policy.INCREMENTAL


def test_the_estimate_rows_of_a_report_reach_the_summary():
    estimate = {"test": drift.ESTIMATED_ACCURACY_TEST, "kind": drift.ESTIMATE, "statistic": 0.8, "low": 0.79, "high": 0.81,
                "effect": 0.12, "floor": 0.03, "drifted": True, "tested": True, "n_current": 3840}
    report = pl.concat([_report(DAY, "v1", True), drift.report_rows([estimate]).with_columns(
        pl.lit(DAY).alias(drift.DAY), pl.lit("v1").alias(drift.PRODUCTION_VERSION))])
    summary = drift.summarise(report, 13, SPEC.full_retrain_drop)
    assert summary.estimated_harm and summary.estimate_reliable and summary.estimated_accuracy == 0.8
    assert summary.untested == [] and summary.severity == 1.0
    assert policy.decide_from_reports(DAY, report, CONFIG).retrain


def _report_rows(day: dt.date, *rows: dict) -> pl.DataFrame:
    """A day's drift report of ``rows`` in the report's own schema (the columns a row leaves out: null)."""
    rows_with_day = [{**row, drift.DAY: day, drift.PRODUCTION_VERSION: "v1", "days": 1} for row in rows]
    return pl.concat([drift.empty_report(), pl.DataFrame(rows_with_day)], how="diagonal_relaxed")


ESTIMATED_HARM = {"test": drift.ESTIMATED_ACCURACY_TEST, "kind": drift.ESTIMATE, "statistic": 0.85, "effect": 0.07,
                  "floor": 0.02, "drifted": True, "tested": True, "low": 0.84, "high": 0.86, "n_current": 300}
"""A day whose only alarm is the estimate's: accuracy without labels 7 points under the reference."""
FALLEN_LABELS = {"test": "fresh-label accuracy", "kind": drift.CONCEPT, "statistic": 0.53, "p_value": 0.0, "p_adjusted": 0.0,
                 "effect": 0.39, "floor": 0.06, "drifted": True, "tested": True, "n_current": 300,
                 "current_value": 0.53, "reference_value": 0.92}


def test_days_of_estimated_harm_the_policy_did_not_act_on_do_not_start_an_event():
    """The recurring held-out stream: three quiet days of reported estimated harm dated a rule that
    flipped on the fourth three days early, and the fix learned mostly from the old rule."""
    earlier = pl.concat([_report_rows(DAY - dt.timedelta(days=k), ESTIMATED_HARM) for k in (3, 2, 1)])
    assert [s.alarm for s in policy.day_states(earlier, CONFIG)] == [False, False, False]
    assert [s.alarm for s in policy.day_states(earlier, ACTING)] == [True, True, True]
    reports = pl.concat([earlier, _report_rows(DAY, FALLEN_LABELS)])
    decision = policy.decide_from_reports(DAY, reports, CONFIG)
    assert decision.action == policy.FULL and decision.change_day == DAY.isoformat()
    assert policy.decide_from_reports(DAY, reports, ACTING).change_day == (DAY - dt.timedelta(days=3)).isoformat()
