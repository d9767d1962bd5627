"""Test helpers: simulated days run through the real cleaning and features, with the truth."""

import datetime as dt

import polars as pl

from pipeline import cleaning, features, ids, sources
from pipeline.dataset import LABEL, ROW_ID, DatasetConfig
from pipeline.simulator import TRUTH, simulate_day

KEY = b"evergreen-test-key"


def days_from(start: dt.date, n: int) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range(n)]


def truth_by_row_id(config: DatasetConfig, day: dt.date) -> pl.DataFrame:
    sim = simulate_day(config.simulator, day)
    return sim.select(ids.row_id(pl.col("device_id"), pl.col("ts"), KEY).alias(ROW_ID), pl.col(TRUTH)).unique(ROW_ID)


def labelled_features(config: DatasetConfig, days: list[dt.date]) -> pl.DataFrame:
    """Feature rows of ``days`` (history from the days before, as the graph does) with the true label."""
    history_days = config.partitions.history_days
    all_days = days_from(days[0] - dt.timedelta(days=history_days), len(days) + history_days)
    clean = {d: cleaning.clean_day(sources.read_raw_day(config, d), config, d, KEY).clean for d in all_days}
    frames = []
    for day in days:
        history = pl.concat([clean[day - dt.timedelta(days=k)] for k in range(1, history_days + 1)])
        feats = features.build_features(clean[day], history, config).drop(LABEL)
        frames.append(feats.join(truth_by_row_id(config, day), on=ROW_ID).rename({TRUTH: LABEL}))
    return pl.concat(frames)


def training_frame(config: DatasetConfig, days: list[dt.date]) -> pl.DataFrame:
    """The gold-label training set of ``days``: features with history, gold labels, the configured
    split; no labelling methods (tests/unit/test_labelling.py covers those), so model tests see real labels."""
    from pipeline import labels, training_set

    feats = labelled_features(config, days).drop(LABEL).with_columns(pl.lit(None, pl.String).alias(LABEL))
    gold = pl.concat([
        labels.gold_labels(cleaning.clean_day(sources.read_raw_day(config, d), config, d, KEY).clean, config, d, KEY)
        for d in days
    ])
    return training_set.split_gold(feats, gold, config)
