"""Features against history, gold labels by arrival day, and the device and time splits of gold labels."""

import datetime as dt

import polars as pl
import pytest

from pipeline import cleaning, features, labels, sources, training_set
from pipeline.dataset import DEVICE_ID, LABEL, ROW_ID, TIMESTAMP
from tests.support.helpers import KEY, days_from

DAY = dt.date(2026, 10, 20)


def _clean(config, day):
    return cleaning.clean_day(sources.read_raw_day(config, day), config, day, KEY).clean


def test_deltas_compare_with_the_device_mean_of_previous_days(config):
    today, history = _clean(config, DAY), pl.concat([_clean(config, d) for d in days_from(DAY - dt.timedelta(days=3), 3)])
    frame = features.build_features(today, history, config)
    device = frame[DEVICE_ID][0]
    expected = frame.filter(pl.col(DEVICE_ID) == device)["rx_power_dbm"][0] - history.filter(pl.col(DEVICE_ID) == device)["rx_power_dbm"].mean()
    assert frame.filter(pl.col(DEVICE_ID) == device)["rx_power_dbm_delta"][0] == pytest.approx(expected)
    assert frame.height == today.height
    numeric, categorical = features.model_feature_names(config)
    assert {"rx_power_dbm_delta", "latency_ms_delta", "temperature_c_delta", "hour"} <= set(numeric)
    assert categorical == ["device_model", "firmware_version"]


def test_without_history_deltas_are_null_not_zero(config):
    frame = features.build_features(_clean(config, DAY), pl.DataFrame(), config)
    assert frame["rx_power_dbm_delta"].null_count() == frame.height


def test_gold_labels_arrive_late_and_point_at_real_rows(config):
    gold = labels.gold_labels(_clean(config, DAY), config, DAY, KEY)
    assert gold.height > 0 and gold[ROW_ID].n_unique() == gold.height
    assert (gold[labels.ARRIVED_ON] == DAY).all()
    lags = (DAY - gold[labels.OBSERVED_AT].dt.date()).dt.total_days()
    assert lags.min() == 0 and lags.max() == config.simulator.label_return.max_lag_days
    earlier = pl.concat([_clean(config, d) for d in days_from(DAY - dt.timedelta(days=3), 4)])
    found = gold.join(earlier, on=ROW_ID, how="semi").height
    assert found / gold.height > 0.99  # the rest were quarantined readings


def test_in_data_labels_become_gold_labels_of_their_own_day(config):
    landing = config.model_copy(update={"source": config.source.model_copy(update={"kind": "landing"})})
    clean = _clean(config, DAY).with_columns(pl.when(pl.int_range(pl.len()) < 10).then(pl.lit("fiber")).otherwise(None).alias(LABEL))
    gold = labels.gold_labels(clean, landing, DAY, KEY)
    assert gold.height == 10 and set(gold[labels.LABEL_SOURCE]) == {"data"}


def _window_training_set(config) -> tuple[pl.DataFrame, pl.DataFrame]:
    days = days_from(DAY - dt.timedelta(days=3), 4)
    feats = pl.concat([features.build_features(_clean(config, d), pl.DataFrame(), config) for d in days])
    gold = pl.concat([labels.gold_labels(_clean(config, d), config, d, KEY) for d in days])
    return training_set.split_gold(feats, gold, config), gold


def _labelled_counts(frame: pl.DataFrame, gold: pl.DataFrame) -> dict[str, int]:
    counts = training_set.split_counts(frame)
    labelled = counts["train"] + counts["validation"] + counts["test"]
    assert counts["unlabelled"] == frame.height - labelled and labelled == frame.join(gold, on=ROW_ID, how="semi").height
    return counts


def test_the_device_split_keeps_each_device_in_one_split_on_every_day(config):
    frame, gold = _window_training_set(config)
    counts = _labelled_counts(frame, gold)
    labelled = frame.filter(pl.col("split") != "unlabelled")
    assert labelled.group_by(DEVICE_ID).agg(pl.col("split").n_unique())["split"].max() == 1
    newest = labelled[TIMESTAMP].dt.date().max()
    assert set(labelled.filter(pl.col(TIMESTAMP).dt.date() == newest)["split"]) == {"train", "validation", "test"}
    assert 0.6 < counts["train"] / (counts["train"] + counts["validation"] + counts["test"]) < 0.8


def test_the_time_split_is_ordered(config):
    timed = config.model_copy(update={"training": config.training.model_copy(update={
        "split": config.training.split.model_copy(update={"method": "time"})})})
    frame, gold = _window_training_set(timed)
    counts = _labelled_counts(frame, gold)
    labelled = counts["train"] + counts["validation"] + counts["test"]
    assert abs(counts["train"] - labelled * 0.7) <= 1
    by_split = {s: frame.filter(pl.col("split") == s)[TIMESTAMP] for s in ("train", "validation", "test")}
    assert by_split["train"].max() <= by_split["validation"].min()
    assert by_split["validation"].max() <= by_split["test"].min()


def test_too_few_labels_is_a_clear_error(config):
    feats = features.build_features(_clean(config, DAY), pl.DataFrame(), config)
    gold = labels.gold_labels(_clean(config, DAY), config, DAY, KEY).head(30)
    with pytest.raises(training_set.TrainingSetError, match="only .* labelled rows in the window"):
        training_set.build_training_set(feats, gold, config)
