"""The training window is chosen on the newest labels: the long one on a stationary stream, the days
since a change of the label rule after one; the choice applies to every labelled row downstream."""

import datetime as dt

import numpy as np
import polars as pl

from pipeline import recency
from pipeline.dataset import LABEL, TIMESTAMP, load_dataset_config
from pipeline.training_set import SPLIT, TEST, TRAIN, UNLABELLED, VALIDATION, WEIGHT
from tests.support.minimal_stream import MINIMAL

START = dt.date(2026, 6, 1)


def _config(tmp_path, **training):
    import yaml

    path = tmp_path / "dataset.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "training": {"recency": {"min_selection_rows": 100, **training}}}))
    return load_dataset_config(path)


def _window(days: int, change_on: int | None, rows: int = 300) -> pl.DataFrame:
    """A training set of ``days`` days, each split by time within the day; the label is x1 > x2
    before ``change_on`` and x1 < x2 from it on (inputs unchanged)."""
    rng = np.random.default_rng(0)
    frames = []
    for i in range(days):
        x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
        flipped = change_on is not None and i >= change_on
        split = np.where(np.arange(rows) < rows * 0.7, TRAIN, np.where(np.arange(rows) < rows * 0.85, VALIDATION, TEST))
        start = dt.datetime.combine(START + dt.timedelta(days=i), dt.time(), tzinfo=dt.UTC)
        frames.append(pl.DataFrame({
            TIMESTAMP: [start + dt.timedelta(seconds=60 * r) for r in range(rows)], "x1": x1, "x2": x2,
            "colour": rng.choice(["red", "green"], size=rows), "hour": np.zeros(rows),
            LABEL: np.where((x1 > x2) != flipped, "1", "0"), SPLIT: split, WEIGHT: np.ones(rows),
        }))
    unlabelled = frames[0].head(5).with_columns(pl.lit(None, pl.String).alias(LABEL), pl.lit(UNLABELLED).alias(SPLIT))
    return pl.concat([*frames, unlabelled])


def test_a_stationary_stream_keeps_the_long_window(tmp_path):
    choice = recency.choose_window(_window(8, None), _config(tmp_path))
    assert choice.days == 8 and choice.decay == 1.0
    assert {s["name"] for s in choice.scores} >= {"1d", "2d", "4d", "7d", "8d", "8d x0.7/day"}


def test_after_a_change_the_days_since_it_win(tmp_path):
    frame = _window(8, change_on=6)
    choice = recency.choose_window(frame, _config(tmp_path), change_day=START + dt.timedelta(days=6))
    assert choice.days == 2 and choice.first_day == START + dt.timedelta(days=6)
    assert "since the change on 2026-06-07" in choice.reason
    scores = {s["name"]: s["accuracy"] for s in choice.scores}
    assert scores["2d"] > 0.9 > scores["8d"]


def test_the_choice_keeps_the_windows_labelled_rows_and_every_unlabelled_row(tmp_path):
    frame = _window(8, None)
    kept = recency.apply(frame, recency.WindowChoice(2, 0.5, START + dt.timedelta(days=7), ""))
    labelled = kept.filter(pl.col(SPLIT) != UNLABELLED)
    assert labelled[TIMESTAMP].dt.date().min() == START + dt.timedelta(days=6)
    assert kept.filter(pl.col(SPLIT) == UNLABELLED).height == 5
    for split in (TRAIN, VALIDATION):  # the older day's rows weigh half, validation's too: the refits learn from them
        weights = labelled.filter(pl.col(SPLIT) == split).group_by(pl.col(TIMESTAMP).dt.date()).agg(pl.col(WEIGHT).max()).sort(TIMESTAMP)
        assert weights[WEIGHT].to_list() == [0.5, 1.0]
    assert labelled.filter(pl.col(SPLIT) == TEST)[WEIGHT].unique().to_list() == [1.0]


def test_switched_off_or_without_enough_validation_rows_the_whole_window_is_used(tmp_path):
    off = recency.choose_window(_window(4, None), _config(tmp_path, enabled=False))
    assert off.days == 4 and "enabled is false" in off.reason
    few = recency.choose_window(_window(4, None, rows=40), _config(tmp_path, min_judging_rows=30))  # 24 rows
    assert few.days == 4 and "validation rows" in few.reason
    # after a change of the label rule, with as few rows to judge on, the old days weigh less
    after = recency.choose_window(_window(4, 3, rows=40), _config(tmp_path, min_judging_rows=30), START + dt.timedelta(days=3))
    assert (after.days, after.decay) == (4, 0.7) and "weighted down" in after.reason
    weights = recency.apply(_window(4, 3, rows=40), after).filter(pl.col(SPLIT) == TRAIN).group_by(pl.col(TIMESTAMP).dt.date()).agg(pl.col(WEIGHT).max())
    assert sorted(weights[WEIGHT].round(3).to_list()) == [0.343, 0.49, 0.7, 1.0]


def test_a_days_few_dozen_labels_since_a_change_judge_the_windows(tmp_path):
    """The recurring held-out stream's first fix: 45 validation rows since the change, below the old
    bar of 50, and the weighted whole window learned 70% from the old rule."""
    frame = _window(8, change_on=7, rows=200)  # 30 validation rows on the change's day
    choice = recency.choose_window(frame, _config(tmp_path, min_selection_rows=200), change_day=START + dt.timedelta(days=7))
    assert (choice.days, choice.decay) == (1, 1.0) and "30 newest validation rows since the change" in choice.reason
