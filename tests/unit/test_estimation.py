"""Calibration, estimated performance without labels, and the causes of a drift (issue 19)."""

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest

from pipeline import causes, drift, estimation
from pipeline.calibration import Calibrator, fit_temperature
from pipeline.release import macro_f1
from pipeline.teacher import fit_teacher
from tests.support.helpers import days_from, labelled_features, training_frame

CLASSES = ("a", "b", "c", "d")
DAY = dt.date(2026, 9, 4)


def _overconfident(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """True probabilities of three classes, and labels drawn from them; the model reports them sharpened."""
    rng = np.random.default_rng(seed)
    truth = rng.dirichlet([1.0, 1.0, 1.0], n)
    labels = np.array([rng.choice(3, p=p) for p in truth])
    return Calibrator(0.5).apply(truth), labels


def test_temperature_scaling_undoes_overconfidence_and_keeps_the_argmax(tmp_path):
    reported, labels = _overconfident(3000)
    calibrator = fit_temperature(reported, labels)
    assert 1.6 < calibrator.temperature < 2.5
    assert (calibrator.apply(reported).argmax(axis=1) == reported.argmax(axis=1)).all()
    calibrator.save(tmp_path / "calibration.json")
    assert Calibrator.load(tmp_path / "calibration.json") == calibrator
    assert Calibrator.load(tmp_path / "missing.json") == Calibrator()  # a version saved before calibration


def _drawn(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated by construction: labels drawn from the probabilities themselves."""
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet([0.3, 0.3, 0.3, 0.3], n)
    return probabilities, (rng.random((n, 1)) > probabilities.cumsum(axis=1)).sum(axis=1).clip(max=3)


def test_on_rows_from_the_calibrated_models_own_distribution_the_truth_lies_in_the_band():
    inside_accuracy = inside_f1 = 0
    for seed in range(40):
        probabilities, labels = _drawn(2000, seed)
        result = estimation.estimate(probabilities, band_z=1.96, seed=seed)
        predicted = probabilities.argmax(axis=1)
        accuracy, f1 = float(np.mean(predicted == labels)), macro_f1(np.asarray(CLASSES)[labels], np.asarray(CLASSES)[predicted], CLASSES)
        inside_accuracy += abs(accuracy - result.accuracy) <= result.accuracy_band
        inside_f1 += abs(f1 - result.macro_f1) <= result.macro_f1_band
        assert result.accuracy_band < 0.03
    assert inside_accuracy >= 34 and inside_f1 >= 34  # 95% bands: about 38 of 40


def test_a_pure_concept_change_is_invisible_to_the_estimate():
    """Documented limit: the same inputs with a new label rule give the same probabilities, so the
    same estimate, while the true accuracy collapses; the fresh-label test is the authority there."""
    probabilities, labels = _drawn(2000, 1)
    rotated = (labels + 1) % 4  # the rule changed: every class is now the next one
    result = estimation.estimate(probabilities, band_z=1.96)
    truth = float(np.mean(probabilities.argmax(axis=1) == rotated))
    assert result.accuracy - truth > 0.3


def test_rows_outside_the_reference_range_or_with_unseen_categories_are_flagged():
    reference = pl.DataFrame({"x": [0.0, 1.0, 2.0], "c": ["a", "b", "a"]})
    current = pl.DataFrame({"x": [0.5, 3.0, 1.0, None], "c": ["a", "a", "z", "b"]})
    assert estimation.unseen(reference, current, ["x"], ["c"]).tolist() == [False, True, True, False]


@pytest.fixture(scope="module")
def fitted(config):
    """A teacher of three simulated days, its newest day as the reference, and the day after."""
    train = training_frame(config, days_from(dt.date(2026, 9, 1), 3))
    reference = train.filter(pl.col("timestamp").dt.date() == dt.date(2026, 9, 3))
    return fit_teacher(train, config), reference, labelled_features(config, [dt.date(2026, 9, 4)])


@pytest.mark.parametrize("feature", ["latency_ms", "rx_power_dbm", "jitter_ms", "crc_errors"])
def test_one_injected_drifting_feature_ranks_first_in_attribution_drift(config, fitted, feature):
    """Among the inputs the teacher uses: one it ignores (here tx_power_dbm) moves no attribution,
    by design; the data-drift table still names it. Above the day-over-day ageing of uptime_h."""
    teacher, reference, day = fitted
    shifted = day.with_columns(pl.col(feature) * 1.5)
    rows = config.feedback.estimate.contribution_rows
    table = causes.attribution_drift(teacher, causes.reference_contributions(teacher, reference, rows), shifted, rows)
    assert table["feature"][0] == feature, table.head(3)
    names, sentence, markdown = causes.top_causes(_as_report(table), 3)
    assert names[0] == feature and sentence.startswith(f"The model's attribution moved most on {feature} (")
    assert markdown.splitlines()[2].startswith(f"| {feature} | attribution |")


def _as_report(table: pl.DataFrame) -> pl.DataFrame:
    return drift.report_rows([{"test": r["feature"], "kind": drift.ATTRIBUTION, "statistic": r["change"], "effect": r["share"],
                               "reference_value": r["reference"], "current_value": r["current"], "tested": True, "drifted": False}
                              for r in table.iter_rows(named=True)])


def test_the_slice_that_carries_the_loss_increase_ranks_first():
    fresh = pl.DataFrame({"site": ["a"] * 50 + ["b"] * 50, "model": ["x", "y"] * 50})
    correct = np.array([True] * 50 + [True, False] * 25)  # site b loses half its rows, on both models
    table = causes.loss_slices(fresh, correct, 0.95, ["site", "model"])
    assert table["slice"][0] == "site=b" and table["excess_errors"][0] == pytest.approx(25 - 50 * 0.05)
    assert table.filter(pl.col("slice") == "site=a")["excess_errors"][0] < 0


def test_the_reference_side_is_stored_once_and_read_back_in_the_teachers_order(fitted, tmp_path):
    teacher, reference, _ = fitted
    before = causes.reference_contributions(teacher, reference, 50)
    causes.save_reference_contributions(before, teacher, tmp_path / causes.REFERENCE_ATTRIBUTION_FILE)
    assert np.allclose(causes.load_reference_contributions(teacher, tmp_path / causes.REFERENCE_ATTRIBUTION_FILE), before)
    assert causes.load_reference_contributions(teacher, tmp_path / "missing.json") is None
    means_only = tmp_path / "means_only.json"  # what versions registered before the per-row sample stored
    means_only.write_text(json.dumps(dict.fromkeys(teacher.preprocessing["feature_order"], 0.1)))
    assert causes.load_reference_contributions(teacher, means_only) is None


def test_sampling_noise_alone_moves_little_attribution(fitted):
    """Two random halves of one day, five times: the largest excess distance stays near nothing
    (median under 2% of the reference attribution, never 5%), below every injected shift's share
    in the test above (5-18%), so sampling alone invents no cause."""
    teacher, reference, _ = fitted
    largest = []
    for seed in range(5):
        shuffled, half = reference.sample(fraction=1.0, shuffle=True, seed=seed), reference.height // 2
        table = causes.attribution_drift(teacher, causes.reference_contributions(teacher, shuffled.head(half), 200), shuffled.tail(half), 200)
        largest.append(table["share"].max())
    assert float(np.median(largest)) < 0.02 and max(largest) < 0.05, largest


def _inputs(current: pl.DataFrame, reference: pl.DataFrame, fresh: pl.DataFrame) -> drift.DriftInputs:
    return drift.DriftInputs(DAY, "v1", reference, current, None, fresh, 0.9, 1000)


def test_the_report_rows_estimate_the_day_each_site_and_the_returned_labels_and_say_when_unreliable(config):
    probabilities, labels = _drawn(1200, 3)
    classes = CLASSES  # four classes of calibrated probabilities, three sites, one categorical input
    rng = np.random.default_rng(0)
    frame = pl.DataFrame({"x": rng.normal(size=1200), "c": ["a"] * 1200, "site": ["s1", "s2", "s3"] * 400, "row": np.arange(1200),
                          "label": np.asarray(classes)[labels]})
    spec = config.feedback.estimate

    def calibrated(rows: pl.DataFrame) -> np.ndarray:
        return probabilities[rows["row"].to_numpy()]

    report = estimation.estimate_report(_inputs(frame, frame, frame.head(600)), calibrated, classes, 0.7, ["x"], ["c"], spec)
    rows = {r["test"]: r for r in report.iter_rows(named=True)}
    assert set(rows) == {estimation.UNSEEN_TEST, drift.ESTIMATED_ACCURACY_TEST, drift.ESTIMATED_F1_TEST,
                         estimation.FRESH_ESTIMATE_TEST, *(estimation.SITE_TEST.format(s) for s in ("s1", "s2", "s3"))}
    day = rows[drift.ESTIMATED_ACCURACY_TEST]
    assert day["tested"] and day["low"] < day["statistic"] < day["high"] and day["reference_value"] == 0.9
    checked = rows[estimation.FRESH_ESTIMATE_TEST]
    assert checked["current_value"] == float(np.mean(probabilities[:600].argmax(axis=1) == labels[:600]))
    assert abs(checked["statistic"] - checked["current_value"]) <= checked["high"] - checked["statistic"]
    assert drift.untested(report.with_columns(pl.lit(False).alias("tested"))) == []  # estimates are never "untested" tests

    moved = frame.with_columns(pl.when(pl.col("row") % 5 == 0).then(pl.lit("new")).otherwise(pl.col("c")).alias("c"))
    unreliable = estimation.estimate_report(_inputs(moved, frame, frame.clear()), calibrated, classes, 0.7, ["x"], ["c"], spec)
    shown = {r["test"]: r for r in unreliable.iter_rows(named=True)}
    assert shown[estimation.UNSEEN_TEST]["statistic"] == pytest.approx(0.2) and shown[estimation.UNSEEN_TEST]["drifted"]
    assert not shown[drift.ESTIMATED_ACCURACY_TEST]["tested"] and not shown[drift.ESTIMATED_ACCURACY_TEST]["drifted"]
    assert estimation.FRESH_ESTIMATE_TEST not in shown  # no labels came back


def test_under_label_noise_the_temperature_makes_the_mean_confidence_read_the_accuracy():
    # a model right about the true rule on every row, with 5% of the labels flipped at random: the
    # least-log-loss temperature keeps the confidence under the accuracy, the estimate's figure must not
    rng = np.random.default_rng(3)
    margin = rng.normal(0, 3, 6000)
    reported = 1 / (1 + np.exp(-np.column_stack([-margin, margin])))
    labels = (margin > 0).astype(int)
    flipped = rng.random(6000) < 0.05
    labels[flipped] = 1 - labels[flipped]
    fitted = fit_temperature(reported[:3000], labels[:3000])
    accuracy = float(np.mean(reported[3000:].argmax(axis=1) == labels[3000:]))
    assert abs(estimation.estimate(fitted.apply(reported[3000:]), band_z=1.96).accuracy - accuracy) < 0.01
    assert fitted.rows == 3000
