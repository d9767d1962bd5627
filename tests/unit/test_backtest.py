"""The backtest: its measurements (pipeline.backtest), the label inbox's returned labels it uses for a
label delay, and the generated streams (``tests/e2e/test_backtest_command.py``
runs ``python -m deploy.backtest``)."""

import datetime as dt
import json
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from examples import streams
from pipeline import backtest as bt
from pipeline.dataset import LABEL, ROW_ID, TIMESTAMP
from pipeline.label_inbox import LabelInbox
from pipeline.sources import SOURCE_FILE, SOURCE_ROW

DAY = dt.date(2026, 6, 1)


def _day(i: int, accuracy: float, data: bool = False, concept: bool = False, retrained: bool = False) -> bt.BacktestDay:
    return bt.BacktestDay(DAY + dt.timedelta(days=i), 100, accuracy, accuracy, {"static": 0.5}, data, concept,
                          "none", "", "v1", retrained=retrained)


def test_a_copy_without_labels_keeps_every_row_and_cell_but_the_label(tmp_path):
    source = tmp_path / "2026-06-01.csv"
    source.write_text("ts,x1,y\n2026-06-01T00:00:00Z,0.5,1\n2026-06-01T01:00:00Z,,0\n")
    target = tmp_path / "staged" / "2026-06-01.csv"
    bt.write_without_labels(source, target, "y", ",")
    copy = pl.read_csv(target, infer_schema=False)
    assert copy["ts"].to_list() == ["2026-06-01T00:00:00Z", "2026-06-01T01:00:00Z"]
    assert copy["x1"].to_list() == ["0.5", None] and copy["y"].null_count() == 2

    parquet = tmp_path / "2026-06-02.parquet"
    pl.DataFrame({"x1": [1.0, 2.0], "y": [1, 0]}).write_parquet(parquet)
    bt.write_without_labels(parquet, tmp_path / "staged" / parquet.name, "y", ",")
    staged = pl.read_parquet(tmp_path / "staged" / parquet.name)
    assert staged["x1"].to_list() == [1.0, 2.0] and staged["y"].null_count() == 2


def test_truth_comes_from_the_original_file_by_the_staged_file_and_row(tmp_path):
    original = tmp_path / "orig" / "2026-06-01.csv"
    original.parent.mkdir()
    original.write_text("ts,x1,y\n2026-06-01T00:00:00Z,0.5,1\n2026-06-01T01:00:00Z,0.7,\n2026-06-01T02:00:00Z,0.9,0\n")
    staged = str(tmp_path / "staged" / "2026-06-01.csv")
    # the clean rows the pipeline made of the staged copy: the second row was quarantined
    clean = pl.DataFrame({ROW_ID: ["a", "c"], SOURCE_FILE: [staged, staged], SOURCE_ROW: [1, 3]})
    truth = bt.landed_truth(clean, {staged: original}, ",", "y").sort(ROW_ID)
    assert truth.rows() == [("a", "1"), ("c", "0")]


def test_scored_rows_are_the_labelled_rows_in_time_order_with_the_truth_not_what_the_pipeline_saw():
    t0 = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    features = pl.DataFrame({ROW_ID: ["b", "a", "c"], TIMESTAMP: [t0 + dt.timedelta(hours=h) for h in (2, 1, 3)],
                             "x1": [1.0, 2.0, 3.0], LABEL: [None, None, None]})
    truth = pl.DataFrame({ROW_ID: ["a", "b", "c"], LABEL: ["1", "0", "7"]})
    rows = bt.scored_rows(features, truth, ("0", "1"))
    assert rows[ROW_ID].to_list() == ["a", "b"] and rows[LABEL].to_list() == ["1", "0"]


def test_no_change_predicts_the_previous_label_or_under_a_delay_the_newest_known():
    rows = pl.DataFrame({LABEL: ["1", "1", "0", "0"]})
    assert list(bt.no_change(rows, "0", 0)) == ["0", "1", "1", "0"]
    assert list(bt.no_change(rows, "1", 2)) == ["1", "1", "1", "1"]


def test_scores_are_accuracy_and_macro_f1_and_nan_without_labelled_rows():
    accuracy, f1 = bt.score(np.array(["0", "1", "1", "1"]), np.array(["0", "1", "0", "1"]), ("0", "1"))
    assert accuracy == 0.75 and f1 == pytest.approx((2 / 3 + 0.8) / 2)
    assert all(np.isnan(bt.score(np.array([]), np.array([]), ("0", "1"))))


def test_a_baseline_is_not_fitted_on_too_few_rows_or_a_single_class(config):
    assert bt.fit_baseline(pl.DataFrame({LABEL: ["none"] * 500}), config) is None
    assert bt.fit_baseline(pl.DataFrame({LABEL: ["none", "fiber"] * 5}), config) is None
    fallback = bt.baseline_predict(None, pl.DataFrame({"x": [1, 2]}), "none")
    assert list(fallback) == ["none", "none"]


def test_an_event_reports_days_to_alarm_and_to_recovery_and_false_alarms_before_it():
    # 7 good days (one false alarm), a change on day 7 alarmed on day 8, retrained, recovered on day 9
    days = [_day(i, 0.95, data=(i == 2)) for i in range(7)]
    days += [_day(7, 0.60), _day(8, 0.62, concept=True, retrained=True), _day(9, 0.94), _day(10, 0.95)]
    summary = bt.summarise(days, [DAY + dt.timedelta(days=7)], ["static"])
    [event] = summary["events"]
    assert event["days_to_concept_alarm"] == 1 and event["days_to_data_alarm"] is None
    assert event["days_to_recovery"] == 2 and event["trough"] == 0.6 and event["accuracy_before"] == 0.95
    assert summary["false_alarm_days"] == 1 and summary["stationary_days"] == 7
    assert summary["mean_accuracy"] == {"evergreen": pytest.approx(np.mean([d.accuracy for d in days]), abs=1e-4), "static": 0.5}
    assert [r["day"] for r in summary["retrains"]] == ["2026-06-09"]


def test_an_event_that_never_recovers_says_so():
    days = [_day(i, 0.95) for i in range(3)] + [_day(3, 0.6), _day(4, 0.6)]
    [event] = bt.summarise(days, [DAY + dt.timedelta(days=3)], [])["events"]
    assert event["days_to_recovery"] is None


def test_returned_labels_are_merged_for_any_row_and_checked_against_the_classes(tmp_path):
    inbox = LabelInbox(tmp_path / "inbox")
    folder = inbox.returned_dir / "2026-06-03"
    folder.mkdir(parents=True)
    (folder / "2026-06-03-labels-of-2026-06-02.csv").write_text("row_id,label\nr1,1\nr2,7\nr3,0\nr3,1\n")
    answers = inbox.read_returned(DAY + dt.timedelta(days=2), ("0", "1"))
    assert answers.labels[ROW_ID].to_list() == ["r1"]  # nothing was queued: returned labels need no queue
    reasons = dict(zip(answers.rejects[ROW_ID], answers.rejects["reason"]))
    assert "not one of" in reasons["r2"] and "conflicting" in reasons["r3"]
    assert inbox.read_answers(DAY + dt.timedelta(days=2), ("0", "1")).labels.height == 0  # answers stay apart


def test_generated_streams_are_deterministic_minimal_and_change_where_they_say(tmp_path):
    spec = replace(streams.STREAMS["sudden"], rows_per_day=300, days=8, drift_day=4)
    path = streams.write_stream(spec, tmp_path)
    again = streams.write_stream(spec, tmp_path / "again")
    first = (path.parent / "landing" / "2026-06-05.csv").read_bytes()
    assert first == (again.parent / "landing" / "2026-06-05.csv").read_bytes()
    assert json.loads((path.parent / "events.json").read_text())["events"] == ["2026-06-05"]
    import yaml

    raw = yaml.safe_load(path.read_text())
    assert set(raw["columns"]) == {"timestamp", "label"} and raw["classes"] == [0, 1]
    # the same inputs labelled by the old rule and the new one disagree on many rows
    concepts = streams._Concepts(np.random.default_rng([spec.seed, 10_000]), 2)
    x, colour = np.random.default_rng(0).normal(size=(1000, 4)), np.zeros(1000, dtype=int)
    old, new = (concepts.labels(x, colour, np.full(1000, c)) for c in (0, 1))
    assert np.mean(old != new) > 0.2


def test_the_timeline_carries_the_estimate_and_the_top_cause():
    estimated = bt.BacktestDay(DAY, 100, 0.9, 0.8, {"static": 0.5}, True, False, "none", "shift without harm", "v1",
                               estimated_accuracy=0.91234, top_cause="latency_ms")
    frame = bt.timeline_frame([estimated, _day(1, 0.9)])
    assert frame["estimated_accuracy"][0] == 0.9123 and frame["top_cause"].to_list() == ["latency_ms", ""]
    assert frame["estimated_accuracy"].is_nan()[1]  # no estimate that day


def test_a_wandering_stream_moves_its_inputs_a_little_every_day_and_keeps_its_rule():
    spec = replace(streams.STREAMS["wandering"], rows_per_day=2000, days=24, drift_day=4)
    concepts = streams._Concepts(np.random.default_rng([spec.seed, 10_000]), spec.classes)
    means = [streams.generate_day(spec, i, concepts).select(list(streams.NUMERIC)).mean().row(0) for i in range(spec.days)]
    steps = np.abs(np.diff(np.array(means), axis=0)).max(axis=1)
    assert steps[:3].max() < 0.1  # before drift_day: only sampling noise
    assert np.median(steps[4:]) > 0.15  # then every day moves (0.25 sd steps)
    day = streams.generate_day(spec, 20, concepts)
    x = day.select(list(streams.NUMERIC)).to_numpy()
    colour = np.array([streams.COLOURS.index(c) for c in day["colour"]])
    agreement = np.mean(concepts.labels(x, colour, np.zeros(len(x), dtype=int)) == day["y"].to_numpy())
    assert agreement > 0.95  # the first rule still labels every row (up to the 3% label noise)


def test_a_mixing_stream_moves_its_inputs_each_day_within_the_reference_and_keeps_its_rule():
    spec = replace(streams.STREAMS["mixing"], rows_per_day=2000, days=20, drift_day=4)
    concepts = streams._Concepts(np.random.default_rng([spec.seed, 10_000]), spec.classes)
    days = [streams.generate_day(spec, i, concepts) for i in range(spec.days)]
    means = np.array([day.select(list(streams.NUMERIC)).mean().row(0) for day in days])
    assert np.abs(means[:4]).max() < 0.1  # before drift_day: only sampling noise
    assert np.median(np.abs(means[4:]).max(axis=1)) > 0.3  # then the day's mix moves the means
    assert np.abs(means).max() <= spec.mixing_sd + 0.1  # drawn afresh, never walking away
    reference = pl.concat(days[:4]).select(list(streams.NUMERIC)).to_numpy()
    late = days[-1].select(list(streams.NUMERIC)).to_numpy()
    outside = ((late < reference.min(axis=0)) | (late > reference.max(axis=0))).any(axis=1)
    assert outside.mean() < 0.01  # the rows stay where the reference had rows
    x = days[-1].select(list(streams.NUMERIC)).to_numpy()
    colour = np.array([streams.COLOURS.index(c) for c in days[-1]["colour"]])
    agreement = np.mean(concepts.labels(x, colour, np.zeros(len(x), dtype=int)) == days[-1]["y"].to_numpy())
    assert agreement > 0.95


def test_an_autocorrelated_stream_keeps_its_label_from_row_to_row_more_than_its_inputs_tell_and_changes_rule():
    spec = replace(streams.STREAMS["autocorrelated"], rows_per_day=500, days=10, drift_day=5)
    concepts = streams._Concepts(np.random.default_rng([spec.seed, 10_000]), spec.classes)
    days = [streams.generate_day(spec, i, concepts) for i in range(spec.days)]
    y = pl.concat(days)["y"].to_numpy()
    shares = np.bincount(y, minlength=spec.classes) / len(y)
    kept = np.mean(y[1:] == y[:-1])  # what the no_change baseline scores
    assert kept > 0.83 and kept > (shares ** 2).sum() + 0.3  # far above chance (about 0.5)
    stamps = pl.concat(days)["ts"].to_list()
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # time order is the chain's order

    def agreement(frame: pl.DataFrame, concept: int) -> float:
        x = frame.select(list(streams.NUMERIC)).to_numpy()
        colour = np.array([streams.COLOURS.index(c) for c in frame["colour"]])
        return float(np.mean(concepts.labels(x, colour, np.full(len(x), concept)) == frame["y"].to_numpy()))

    before, after = pl.concat(days[:5]), pl.concat(days[5:])
    # the inputs tell the label only in part (about rule_agreement), less than the previous row does
    assert 0.72 < agreement(before, 0) < 0.86 and agreement(before, 0) < kept - 0.05
    # and the rule that ties them to it changes on the drift day
    assert agreement(after, 1) > 0.72 and agreement(after, 0) < agreement(after, 1) - 0.1
    assert agreement(before, 1) < agreement(before, 0) - 0.1


def test_every_move_of_a_day_is_kept_in_order():
    day = _day(0, 0.9)
    day.add_release("rolled out v2")
    day.add_release("started canary on east")
    assert day.release == "rolled out v2; started canary on east"
    assert bt.summarise([day], [], [])["releases"] == [{"day": day.day.isoformat(), "release": "rolled out v2"},
                                                    {"day": day.day.isoformat(), "release": "started canary on east"}]
