"""Great Expectations checks derived from the contract: quiet on good data, specific on bad."""

import datetime as dt

import polars as pl

from pipeline import sources, validation

DAY = dt.date(2026, 10, 20)


def _outcomes(config, raw):
    return {o.name: o for o in validation.validate(validation.expectation_frame(raw, config), config)}


def test_a_simulated_day_passes_every_check(config):
    outcomes = _outcomes(config, sources.read_raw_day(config, DAY))
    assert set(outcomes) == set(validation.CHECKS)
    assert all(o.passed for o in outcomes.values()), {n: o.failures for n, o in outcomes.items() if not o.passed}
    assert outcomes["value_ranges"].evaluated == len(config.numeric_features)


def test_broken_data_fails_the_checks_that_concern_it(config):
    raw = sources.read_raw_day(config, DAY)
    n, i = raw.height, pl.int_range(pl.len())
    broken = raw.drop("jitter_ms").with_columns(
        pl.when(i % 10 == 0).then(-5.0).otherwise(pl.col("latency_ms")).alias("latency_ms"),
        pl.when(i % 5 == 0).then(None).otherwise(pl.col("throughput_mbps")).alias("throughput_mbps"),
    )
    outcomes = _outcomes(config, broken)
    assert not outcomes["schema"].passed
    assert [f["column"] for f in outcomes["schema"].failures] == ["jitter_ms"]
    assert [f["column"] for f in outcomes["value_ranges"].failures] == ["latency_ms"]
    assert outcomes["value_ranges"].failures[0]["unexpected_count"] == len(range(0, n, 10))
    assert outcomes["value_ranges"].failures[0]["examples"][0] == "-5.0"
    assert [f["column"] for f in outcomes["null_rates"].failures] == ["throughput_mbps"]
    assert outcomes["uniqueness"].passed


def test_failures_never_show_raw_device_ids(config):
    raw = sources.read_raw_day(config, DAY)
    repeated = pl.concat([raw, raw.head(200), raw.head(200)])  # ~10% duplicated (device, timestamp)
    outcomes = _outcomes(config, repeated.with_columns(pl.lit("!!").alias("device_model")))
    assert not outcomes["uniqueness"].passed
    assert "CPE-" not in str([o.failures for o in outcomes.values()])
    assert outcomes["value_ranges"].passed


def test_validating_in_batches_adds_up_to_validating_the_day_at_once(config):
    """Counts, percentages, examples and each ``mostly`` decision are those of one frame; duplicated
    (device, timestamp) pairs far apart (in different batches) still fail uniqueness."""
    raw = sources.read_raw_day(config, DAY)
    i = pl.int_range(pl.len())
    broken = pl.concat([raw, raw.head(200), raw.head(200)]).with_columns(
        pl.when(i % 10 == 0).then(-5.0).otherwise(pl.col("latency_ms")).alias("latency_ms"),
        pl.when(i % 5 == 0).then(None).otherwise(pl.col("throughput_mbps")).alias("throughput_mbps"),
        pl.when(i % 3 == 0).then(pl.lit("unknown")).otherwise(pl.col("device_model")).alias("device_model"),
    )
    batched_config = config.model_copy(update={"source": config.source.model_copy(update={"validation_batch_rows": 377})})
    checked = []
    batched = validation.validate_day(broken.lazy(), batched_config, check=checked.append)
    assert batched == _outcomes_list(config, broken)
    assert len(checked) == -(-broken.height // 377) and not next(o for o in batched if o.name == "uniqueness").passed
    assert {o.name for o in batched if not o.passed} >= {"value_ranges", "null_rates", "uniqueness"}


def _outcomes_list(config, raw):
    return validation.validate(validation.expectation_frame(raw, config), config)
