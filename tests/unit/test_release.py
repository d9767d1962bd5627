"""Release decisions in pipeline/release.py: gates, canary sites and the canary verdict."""

import datetime as dt

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import f1_score

from pipeline import evaluation, release
from pipeline.dataset import LABEL, SITE, TIMESTAMP, CanarySpec, GateSpec
from pipeline.quantize import Comparison
from pipeline.registry import Canary
from pipeline.training_set import SPLIT, TEST, TRAIN, VALIDATION

CLASSES = ("none", "fiber")


def test_canary_sites_are_a_stable_fraction_never_all():
    sites = ["north", "south", "east", "west"]
    chosen = release.canary_sites(sites, 0.25, "v1")
    assert len(chosen) == 1 and chosen == release.canary_sites(list(reversed(sites)), 0.25, "v1")
    assert len(release.canary_sites(sites, 0.5, "v1")) == 2
    assert len(release.canary_sites(sites, 0.99, "v1")) == 3
    assert release.canary_sites(["only"], 0.5, "v1") == ()
    assert len({release.canary_sites(sites, 0.25, f"v{i}") for i in range(20)}) > 1


def test_gates_pass_and_fail_on_their_thresholds():
    spec = GateSpec(min_macro_f1=0.6, max_regression=0.02, max_package_bytes=1000, max_latency_us=50)
    assert release.quality_gate({"the test rows": 0.61}, spec).passed and not release.quality_gate({"the test rows": 0.59}, spec).passed
    # after a change of the label rule: met on the rows since the change or on the whole split, either one
    recalled = release.quality_gate({"the 554 test rows": 0.47, "the 45 test rows since the change": 0.87}, spec)
    assert recalled.passed and recalled.metadata["macro_f1"] == 0.87
    assert recalled.description == "student macro-F1 0.470 on the 554 test rows, 0.870 on the 45 test rows since the change (floor 0.6)"
    assert not release.quality_gate({"the 554 test rows": 0.47, "the 45 test rows since the change": 0.55}, spec).passed
    assert release.package_gate(1000, 49.0, spec).passed
    assert not release.package_gate(1001, 10.0, spec).passed and not release.package_gate(10, 51.0, spec).passed

    rows = pl.DataFrame({LABEL: ["none"] * 50 + ["fiber"] * 50})
    truth = lambda frame: frame[LABEL].to_numpy()  # noqa: E731
    always_none = lambda frame: np.array(["none"] * frame.height)  # noqa: E731
    gate = release.regression_gate(rows, always_none, truth, CLASSES, spec)
    assert not gate.passed and gate.metadata["production_macro_f1"] == 1.0
    assert release.regression_gate(rows, truth, always_none, CLASSES, spec).passed
    assert release.regression_gate(rows, always_none, None, CLASSES, spec).passed  # nothing to regress from


def test_the_regression_gate_tolerates_noise_between_equally_good_models():
    """On 120 rows, two models with 10% errors each differ by points of macro-F1 by chance alone."""
    spec = GateSpec(max_regression=0.02)
    rows = pl.DataFrame({LABEL: ["none", "fiber"] * 60})
    truth = rows[LABEL].to_numpy()

    def with_errors(seed: int):
        flip = np.random.default_rng(seed).random(len(truth)) < 0.1
        return lambda frame: np.where(flip, np.where(truth == "none", "fiber", "none"), truth)

    noisy = with_errors(0)(rows)
    assert release.macro_f1(truth, noisy, CLASSES) == pytest.approx(f1_score(truth, noisy, average="macro"))
    assert release.macro_f1(truth, noisy, ("none", "fiber", "power")) == pytest.approx(
        f1_score(truth, noisy, labels=["none", "fiber", "power"], average="macro", zero_division=0))
    gates = [release.regression_gate(rows, with_errors(seed), with_errors(seed + 100), CLASSES, spec) for seed in range(5)]
    assert all(g.passed for g in gates)
    assert max(abs(g.metadata["candidate_macro_f1"] - g.metadata["production_macro_f1"]) for g in gates) > spec.max_regression


def _comparison(labels: np.ndarray, fp32: np.ndarray, int8: np.ndarray) -> Comparison:
    f1 = {name: f1_score(labels, p, labels=[0, 1, 2], average="macro", zero_division=0) for name, p in (("fp32", fp32), ("int8", int8))}
    return Comparison(rows=len(labels), fp32_bytes=1, int8_bytes=1, fp32_accuracy=0, int8_accuracy=0,
                      fp32_macro_f1=f1["fp32"], int8_macro_f1=f1["int8"], argmax_agreement=float((fp32 == int8).mean()),
                      max_abs_diff=0, labels=labels, fp32_predicted=fp32, int8_predicted=int8)


def test_the_int8_gate_ignores_one_flipped_row_but_not_a_worse_model():
    rng = np.random.default_rng(0)
    labels = rng.choice(3, size=130, p=[0.9, 0.05, 0.05])
    fp32 = labels.copy()
    one_flip = fp32.copy()
    one_flip[np.flatnonzero(labels == 2)[0]] = 0
    flipped = release.int8_gate(_comparison(labels, fp32, one_flip), 3, GateSpec())
    assert flipped.passed and flipped.metadata["macro_f1_drop"] > GateSpec().max_int8_drop
    worse = np.where(rng.uniform(size=130) < 0.3, 0, fp32)
    assert not release.int8_gate(_comparison(labels, fp32, worse), 3, GateSpec()).passed


def test_newest_test_rows_are_test_split_rows_of_the_newest_days():
    days = [dt.datetime(2026, 10, d) for d in (1, 2, 3, 4)]
    frame = pl.DataFrame({TIMESTAMP: days * 2, SPLIT: [TEST] * 4 + [TRAIN] * 4})
    rows = release.newest_test_rows(frame, 2)
    assert rows[SPLIT].unique().to_list() == [TEST]
    assert sorted(rows[TIMESTAMP].dt.day().to_list()) == [3, 4]


def test_after_a_change_of_the_label_rule_the_gates_judge_on_its_days_only():
    days = [dt.datetime(2026, 10, d) for d in (1, 2, 3, 4)]
    frame = pl.DataFrame({TIMESTAMP: days * 2, SPLIT: [TEST] * 4 + [TRAIN] * 4})
    since = evaluation.judged_test_rows(frame, dt.date(2026, 10, 3))
    assert since[SPLIT].unique().to_list() == [TEST] and sorted(since[TIMESTAMP].dt.day().to_list()) == [3, 4]
    assert evaluation.judged_test_rows(frame, None).height == 4
    assert evaluation.judged_test_rows(frame, dt.date(2026, 10, 9)).height == 4  # no test row since it yet: all


def _labelled(days: list[dt.date], rows_per_site_day: int) -> pl.DataFrame:
    records = [{TIMESTAMP: dt.datetime.combine(day, dt.time(12)), SITE: site, LABEL: "none"}
               for day in days for site in ("east", "west") for _ in range(rows_per_site_day)]
    return pl.DataFrame(records)


def test_the_canary_waits_for_its_window_and_enough_labels_then_decides():
    canary = Canary("v2", ("east",), "2026-10-01", window_days=2)  # serves 10-02 and 10-03
    spec = CanarySpec(min_labels=100, tolerance=0.02)
    right = lambda frame: frame[LABEL].to_numpy()  # noqa: E731
    wrong = lambda frame: np.array(["fiber"] * frame.height)  # noqa: E731
    days = [dt.date(2026, 10, d) for d in (1, 2, 3)]
    labelled = _labelled(days, 60)

    early = release.judge_canary(dt.date(2026, 10, 2), canary, labelled, right, right, spec)
    assert (early.verdict, early.days_observed) == (release.PENDING, 1)
    ok = release.judge_canary(dt.date(2026, 10, 3), canary, labelled, right, right, spec)
    # the release day's readings were served by production: only 10-02 and 10-03 count
    assert (ok.verdict, ok.canary_rows, ok.control_rows) == (release.ROLL_OUT, 120, 120)
    bad = release.judge_canary(dt.date(2026, 10, 3), canary, labelled, wrong, right, spec)
    assert bad.verdict == release.ROLL_BACK and bad.canary_accuracy == 0.0 and bad.control_accuracy == 1.0
    sparse = release.judge_canary(dt.date(2026, 10, 3), canary, _labelled(days, 10), wrong, right, spec)
    assert sparse.verdict == release.PENDING and "too few" in sparse.reason


def test_each_arm_is_estimated_on_every_row_it_served_since_the_release():
    canary = Canary("v2", ("east",), "2026-10-01", window_days=2)
    served = _labelled([dt.date(2026, 10, d) for d in (1, 2, 3)], 60)
    sure = lambda frame: np.tile([0.9, 0.1], (frame.height, 1))  # noqa: E731
    unsure = lambda frame: np.tile([0.6, 0.4], (frame.height, 1))  # noqa: E731
    arms = release.estimate_arms(dt.date(2026, 10, 2), canary, served, sure, unsure, band_z=1.96)
    # 10-01 was served by production everywhere; on 10-02 each arm served its site's 60 rows
    assert (arms["canary"].rows, arms["control"].rows) == (60, 60)
    assert arms["canary"].accuracy == pytest.approx(0.9) and arms["control"].accuracy == pytest.approx(0.6)
    assert arms["canary"].accuracy_band == pytest.approx(1.96 * np.sqrt(60 * 0.09) / 60)
    before = release.estimate_arms(dt.date(2026, 10, 1), canary, served, sure, unsure, band_z=1.96)
    assert before["canary"].rows == 0 and np.isnan(before["canary"].accuracy)


def test_a_canary_clearly_better_than_production_rolls_out_before_its_window_ends():
    canary = Canary("v2", ("east",), "2026-10-01", window_days=2)  # serves 10-02 and 10-03
    right = lambda frame: frame[LABEL].to_numpy()  # noqa: E731
    wrong = lambda frame: np.array(["fiber"] * frame.height)  # noqa: E731
    labelled = _labelled([dt.date(2026, 10, d) for d in (1, 2)], 120)
    spec = CanarySpec(min_labels=100, tolerance=0.02)
    better = release.judge_canary(dt.date(2026, 10, 2), canary, labelled, right, wrong, spec)
    assert better.verdict == release.ROLL_OUT and "with 99% confidence" in better.reason
    # not on the release day itself, not on too few labels, not when only as good, not when switched off
    assert release.judge_canary(dt.date(2026, 10, 1), canary, labelled, right, wrong, spec).verdict == release.PENDING
    sparse = _labelled([dt.date(2026, 10, 2)], 15)  # below the 20 labels an arm needs for the early bound
    assert release.judge_canary(dt.date(2026, 10, 2), canary, sparse, right, wrong, spec).verdict == release.PENDING
    # far fewer than min_labels suffice when the gap is sure: 25 labels each, 25 points apart
    half_right = lambda frame: np.where(np.arange(frame.height) % 4 == 0, "fiber", frame[LABEL].to_numpy())  # noqa: E731
    few = _labelled([dt.date(2026, 10, 2)], 25)
    assert release.judge_canary(dt.date(2026, 10, 2), canary, few, right, half_right, spec).verdict == release.ROLL_OUT
    near = lambda frame: np.where(np.arange(frame.height) % 12 == 0, "fiber", frame[LABEL].to_numpy())  # noqa: E731
    assert release.judge_canary(dt.date(2026, 10, 2), canary, few, right, near, spec).verdict == release.PENDING
    assert release.judge_canary(dt.date(2026, 10, 2), canary, labelled, right, right, spec).verdict == release.PENDING
    off = CanarySpec(min_labels=100, tolerance=0.02, early_margin=None)
    assert release.judge_canary(dt.date(2026, 10, 2), canary, labelled, right, wrong, off).verdict == release.PENDING


def test_an_easier_canary_site_is_no_reason_to_roll_out_early():
    """Both models score every served row: a candidate no better than production on a canary site
    where production is right anyway does not roll out early, though its arm reads 30 points ahead."""
    canary = Canary("v2", ("east",), "2026-10-01", window_days=3)
    served = _labelled([dt.date(2026, 10, 2)], 100)
    hard_west = lambda frame: np.where((frame[SITE] == "west").to_numpy() & (np.arange(frame.height) % 10 < 3), "fiber",  # noqa: E731
                                       frame[LABEL].to_numpy())
    spec = CanarySpec(min_labels=100, tolerance=0.02)
    same = release.judge_canary(dt.date(2026, 10, 2), canary, served, hard_west, hard_west, spec)
    assert (same.canary_accuracy, same.control_accuracy, same.verdict) == (1.0, 0.7, release.PENDING)
    right = lambda frame: frame[LABEL].to_numpy()  # noqa: E731
    fix = release.judge_canary(dt.date(2026, 10, 2), canary, served, right, hard_west, spec)
    assert fix.verdict == release.ROLL_OUT and "all 200 labelled rows" in fix.reason
    assert (fix.candidate_accuracy, fix.production_accuracy) == (1.0, 0.85)


def test_a_canary_on_a_harder_site_is_not_rolled_back_for_the_site():
    """At the window's end, a candidate exactly as good as production, serving the site where both
    are wrong 30% of the time, reads 30 points behind arm against arm; paired it rolls out."""
    canary = Canary("v2", ("west",), "2026-10-01", window_days=2)
    served = _labelled([dt.date(2026, 10, 2), dt.date(2026, 10, 3)], 100)
    hard_west = lambda frame: np.where((frame[SITE] == "west").to_numpy() & (np.arange(frame.height) % 10 < 3), "fiber",  # noqa: E731
                                       frame[LABEL].to_numpy())
    verdict = release.judge_canary(dt.date(2026, 10, 3), canary, served, hard_west, hard_west, CanarySpec(min_labels=100, tolerance=0.02))
    assert (verdict.canary_accuracy, verdict.control_accuracy, verdict.verdict) == (0.7, 1.0, release.ROLL_OUT)


def test_a_sure_fix_rolls_out_after_its_window_without_waiting_for_min_labels():
    canary = Canary("v2", ("east",), "2026-10-01", window_days=2)  # serves 10-02 and 10-03
    right = lambda frame: frame[LABEL].to_numpy()  # noqa: E731
    half_right = lambda frame: np.where(np.arange(frame.height) % 4 == 0, "fiber", frame[LABEL].to_numpy())  # noqa: E731
    spec = CanarySpec(min_labels=100, tolerance=0.02)
    few = _labelled([dt.date(2026, 10, 3)], 30)  # window over, 30 labels an arm of the 100 the full verdict needs
    sure = release.judge_canary(dt.date(2026, 10, 3), canary, few, right, half_right, spec)
    assert sure.verdict == release.ROLL_OUT and "with 99% confidence" in sure.reason
    # as good as production on as few labels: still waits for min_labels
    assert release.judge_canary(dt.date(2026, 10, 3), canary, few, right, right, spec).verdict == release.PENDING


def test_a_sure_fix_for_a_label_rule_change_starts_on_most_sites():
    # test rows on 10-01 .. 10-04 (40 a day), the rule changed on 10-03; train rows are never judged
    days = [dt.datetime(2026, 10, d, 12) for d in (1, 2, 3, 4) for _ in range(40)]
    frame = pl.DataFrame({TIMESTAMP: days * 2, SPLIT: [TEST] * 160 + [TRAIN] * 160, LABEL: ["none"] * 320})
    right = lambda rows: rows[LABEL].to_numpy()  # noqa: E731
    wrong = lambda rows: np.array(["fiber"] * rows.height)  # noqa: E731
    changed, spec = dt.date(2026, 10, 3), CanarySpec(fraction=0.25, fix_fraction=0.75)
    fix = release.gray_release(spec, frame, changed, right, wrong)
    assert fix.fraction == 0.75 and "on the 80 test and validation rows since the change" in fix.reason
    # no confirmed change, no gain, or the rule switched off: the usual canary
    assert release.gray_release(spec, frame, None, right, wrong).fraction == 0.25
    assert release.gray_release(spec, frame, changed, right, right).fraction == 0.25
    assert release.gray_release(CanarySpec(fraction=0.25, fix_fraction=None), frame, changed, right, wrong).fraction == 0.25
    # a gain too small to be sure on 80 rows: 2 rows (0.025, less 1.645 standard errors: -0.004)
    two_rows = lambda rows: np.where(np.arange(rows.height) % 40 == 0, "fiber", rows[LABEL].to_numpy())  # noqa: E731
    small = release.gray_release(spec, frame, changed, right, two_rows)
    assert small.fraction == 0.25 and "not surely above 0" in small.reason
    # 3 rows (0.0375) clear the default one-sided 95% bar (+0.002), not a 99% one (2.326: -0.012)
    three_rows = lambda rows: np.where(np.arange(rows.height) < 3, "fiber", rows[LABEL].to_numpy())  # noqa: E731
    assert release.gray_release(spec, frame, changed, right, three_rows).fraction == 0.75
    assert release.gray_release(spec.model_copy(update={"fix_z": 2.326}), frame, changed, right, three_rows).fraction == 0.25
    # the validation rows since the change count too: 2 in 40 wrong on 160 rows (0.025, 1.645 standard errors: +0.005)
    with_validation = pl.concat([frame, frame.filter(pl.col(SPLIT) == TEST).with_columns(pl.lit(VALIDATION).alias(SPLIT))])
    assert release.gray_release(spec, with_validation, changed, right, two_rows).fraction == 0.75
    assert release.gray_release(spec.model_copy(update={"fix_judged_on": ("test",)}), with_validation, changed, right, two_rows).fraction == 0.25
    # a sure one of 1 row in 8 (0.125, less 2.33 standard errors: 0.039) is a fix
    eighth = lambda rows: np.where(np.arange(rows.height) % 8 == 0, "fiber", rows[LABEL].to_numpy())  # noqa: E731
    assert release.gray_release(spec, frame, changed, right, eighth).fraction == 0.75
    # no test row since the change yet
    assert release.gray_release(spec, frame, dt.date(2026, 10, 5), right, wrong).fraction == 0.25


def test_a_retrain_for_a_label_rule_change_takes_over_a_running_fix_and_is_judged_on_rows_it_never_saw():
    running = Canary("v5", ("east", "south", "west"), "2026-10-14", 2)
    taken = release.take_over_canary(running, "2026-10-13", "v6", "2026-10-15", ("west",), "2026-10-15")
    assert taken == Canary("v6", ("east", "south", "west"), "2026-10-14", 2, trained_through="2026-10-15")
    assert (taken.first_day, taken.last_day, taken.judged_from) == (dt.date(2026, 10, 15), dt.date(2026, 10, 16), dt.date(2026, 10, 16))
    assert running.judged_from == running.first_day
    # no change behind either, no running canary, or more sites: a gray release of its own
    assert release.take_over_canary(running, None, "v6", "2026-10-15", ("west",), "2026-10-15") is None
    assert release.take_over_canary(running, "2026-10-13", "v6", None, ("west",), "2026-10-15") is None
    assert release.take_over_canary(None, None, "v6", "2026-10-15", ("west",), "2026-10-15") is None
    four = ("east", "north", "south", "west")
    assert release.take_over_canary(running, "2026-10-13", "v6", "2026-10-15", four, "2026-10-15") is None
    # the verdict counts the rows served after the day it trained through
    labelled = pl.DataFrame({TIMESTAMP: [dt.datetime(2026, 10, d, 12) for d in (15, 16) for _ in range(40)] * 2,
                             SITE: ["east"] * 80 + ["north"] * 80, LABEL: ["none"] * 160})
    right = lambda rows: rows[LABEL].to_numpy()  # noqa: E731
    verdict = release.judge_canary(dt.date(2026, 10, 16), taken, labelled, right, right, CanarySpec(min_labels=10))
    assert (verdict.canary_rows, verdict.control_rows, verdict.days_observed) == (40, 40, 2)
