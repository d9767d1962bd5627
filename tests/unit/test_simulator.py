"""The simulator: deterministic per (day, site), and a firmware roll-out that really hurts a model."""

import datetime as dt
import hashlib
import io

import numpy as np
import polars as pl
import pytest

from pipeline.encoding import label_codes
from pipeline.simulator import TRUTH, returned_labels, simulate_day, simulate_site_day
from pipeline.teacher import fit_teacher
from pipeline.training_set import SPLIT, TRAIN, VALIDATION
from tests.support.helpers import days_from, labelled_features


def _parquet_digest(frame: pl.DataFrame) -> str:
    buf = io.BytesIO()
    frame.write_parquet(buf)
    return hashlib.sha256(buf.getvalue()).hexdigest()


def test_same_seed_same_bytes(config):
    day = dt.date(2026, 10, 20)
    assert _parquet_digest(simulate_day(config.simulator, day)) == _parquet_digest(simulate_day(config.simulator, day))


def test_a_site_day_does_not_depend_on_what_was_generated_before(config):
    day = dt.date(2026, 10, 20)
    alone = simulate_site_day(config.simulator, "east", day)
    simulate_day(config.simulator, day - dt.timedelta(days=1))  # other draws in between
    in_day = simulate_day(config.simulator, day).filter(pl.col("site") == "east")
    assert alone.equals(in_day)


def test_other_seed_other_data(config):
    day = dt.date(2026, 10, 20)
    other = config.simulator.model_copy(update={"seed": config.simulator.seed + 1})
    assert not simulate_day(config.simulator, day).equals(simulate_day(other, day))


def test_rows_per_day_and_all_classes_present(config):
    frame = simulate_day(config.simulator, dt.date(2026, 10, 20), dirty=False)
    spec = config.simulator
    assert frame.height == len(spec.sites) * spec.devices_per_site * len(spec.hours)
    assert set(frame[TRUTH].unique()) == set(config.classes)


def test_firmware_rollout_and_new_device_model_follow_the_timeline(config):
    drift = config.simulator.drift
    before = simulate_day(config.simulator, drift.firmware_rollout.date - dt.timedelta(days=1))
    after = simulate_day(config.simulator, drift.new_device_model.date + dt.timedelta(days=5))
    new_fw = drift.firmware_rollout.version
    assert (before["firmware_version"] == new_fw).sum() == 0
    share = (after["firmware_version"] == new_fw).mean()
    assert share == pytest.approx(drift.firmware_rollout.share, abs=0.15)
    assert drift.new_device_model.name not in before["device_model"].to_list()
    assert drift.new_device_model.name in after["device_model"].to_list()


def test_returned_labels_are_a_late_partial_sample_of_true_labels(config):
    day = dt.date(2026, 10, 20)
    labels = returned_labels(config.simulator, day)
    lr = config.simulator.label_return
    observed_days = labels["ts"].dt.date()
    assert observed_days.min() >= day - dt.timedelta(days=lr.max_lag_days)
    assert observed_days.max() <= day
    rows_per_day = simulate_day(config.simulator, day, dirty=False).height
    # each past day contributes fraction / (max_lag + 1) of its rows on average
    assert labels.height == pytest.approx(rows_per_day * lr.fraction, rel=0.15)
    truth = pl.concat([simulate_day(config.simulator, d) for d in days_from(day - dt.timedelta(days=lr.max_lag_days), lr.max_lag_days + 1)])
    joined = labels.join(truth.unique(["ts", "device_id"]), on=["ts", "device_id"], suffix="_true")
    assert joined.height == labels.height
    assert (joined[TRUTH] == joined[f"{TRUTH}_true"]).all()


def test_a_label_delay_holds_every_label_back_by_that_many_days(config):
    """The same rows come back, ``delay_days`` later: labels arriving on a day come from readings
    ``delay .. delay + max_lag`` days before it."""
    day, delay = dt.date(2026, 10, 27), 7
    delayed = config.simulator.model_copy(update={"label_return": config.simulator.label_return.model_copy(update={"delay_days": delay})})
    labels = returned_labels(delayed, day)
    observed_days = labels["ts"].dt.date()
    assert observed_days.max() <= day - dt.timedelta(days=delay)
    assert observed_days.min() >= day - dt.timedelta(days=delay + config.simulator.label_return.max_lag_days)
    assert labels.sort("ts", "device_id").equals(returned_labels(config.simulator, day - dt.timedelta(days=delay)).sort("ts", "device_id"))


def test_a_teacher_trained_before_the_rollout_loses_ten_points_after_it(config):
    """The simulator's point: the seeds' 90% -> 70% story happens, so Evergreen has work to do."""
    rollout = config.simulator.drift.firmware_rollout.date
    train_days = days_from(rollout - dt.timedelta(days=9), 6)
    val_days = days_from(rollout - dt.timedelta(days=3), 2)
    test_before = labelled_features(config, [rollout - dt.timedelta(days=1)])
    test_after = labelled_features(config, days_from(rollout + dt.timedelta(days=5), 2))
    train = labelled_features(config, train_days).with_columns(pl.lit(TRAIN).alias(SPLIT))
    val = labelled_features(config, val_days).with_columns(pl.lit(VALIDATION).alias(SPLIT))
    teacher = fit_teacher(pl.concat([train, val]).with_columns(pl.lit(1.0).alias("weight")), config)

    def accuracy(frame: pl.DataFrame) -> float:
        return float((teacher.predict_proba(frame).argmax(axis=1) == label_codes(frame, config.classes)).mean())

    before, after = accuracy(test_before), accuracy(test_after)
    assert before >= 0.85
    assert before - after >= 0.10, f"accuracy {before:.3f} before the roll-out, {after:.3f} after"
    assert np.isfinite(after)
