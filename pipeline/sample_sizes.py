"""Sample sizes that follow the data, not the simulator.

The YAML's windows and counts were tuned on the simulator (about 3,800 rows a day); a user's stream
may have 48. A statistic needs a number of rows, not a number of days: where a day holds fewer rows
than a test needs, the window widens (more days pooled) up to what the data holds; counts that only
stand for "a day's worth" shrink to what a day of this stream brings. The YAML values stay the
defaults and caps, so a stream with the simulator's volume behaves exactly as configured.
"""

import math
from dataclasses import dataclass

import polars as pl

from pipeline.dataset import TIMESTAMP, DatasetConfig
from pipeline.training_set import AUGMENTED, PROVENANCE, SPLIT, UNLABELLED

MIN_BATCH, MAX_BATCH, MIN_EPOCHS, MAX_EPOCHS = 64, 1024, 5, 60
EPOCH_HEADROOM = 3
"""The student's epochs allow this many times the target steps: on the simulator the best validation
epoch came after about twice them, and a cap at the target ended every run on its last, still
improving epoch, 1-2 accuracy points below the teacher (``benchmarks/student_gap.py``). Early
stopping ends the run once it stops improving."""


def days_for(rows_needed: int, rows_per_day: float, configured_days: int, max_days: int) -> int:
    """Days a window must span to hold ``rows_needed`` rows: at least ``configured_days``, at most
    ``max_days`` (all the data there is)."""
    needed = math.ceil(rows_needed / rows_per_day) if rows_per_day > 0 else max_days
    return max(1, min(max_days, max(configured_days, needed)))


@dataclass(frozen=True)
class SampleSizes:
    """The effective windows and counts for a stream of ``rows_per_day`` rows a day, of which
    ``labelled_per_day`` carry a label (measured on a training window)."""

    rows_per_day: float
    labelled_per_day: float
    reference_days: int
    """Newest days of the training window kept as the drift reference."""
    min_new_rows: int
    """New labelled training rows an incremental teacher update needs."""
    min_validation_rows: int
    """New validation rows (the half that judges) an incremental update must be judged on."""
    regression_days: int
    """Newest days of the test split the regression gate compares candidate and production on."""
    canary_min_labels: int
    """Returned labels each canary arm needs."""


def sample_sizes(rows_per_day: float, labelled_per_day: float, config: DatasetConfig) -> SampleSizes:
    """Reference and regression windows widen until they hold the rows their statistics need; the
    incremental update asks for at most a day of new labelled training rows, and to be judged on at
    most the half of a day's new validation rows that does not stop it early; a canary arm for at
    most the labels its share of the sites returns over the canary window (it keeps waiting, and
    pooling later days, until it has them)."""
    window = config.partitions.window_days
    drift, policy = config.feedback.drift, config.feedback.policy
    gates, split = config.deployment.gates, config.training.split
    test_per_day = labelled_per_day * (1 - split.train - split.validation)
    return SampleSizes(
        rows_per_day=rows_per_day, labelled_per_day=labelled_per_day,
        reference_days=days_for(drift.reference_min_rows, rows_per_day, drift.reference_days, window),
        min_new_rows=max(1, min(policy.min_new_rows, math.floor(labelled_per_day * split.train))),
        min_validation_rows=max(1, min(policy.min_validation_rows, math.floor(labelled_per_day * split.validation / 2))),
        regression_days=days_for(gates.regression_min_rows, test_per_day, gates.regression_days, window),
        canary_min_labels=canary_min_labels(labelled_per_day, config),
    )


def canary_min_labels(labelled_per_day: float, config: DatasetConfig) -> int:
    """``canary.min_labels``, or the labels the smaller arm (its share of the sites) returns over the
    canary window when that is fewer: the canary is judged on readings the label lookback still
    holds, so a larger demand would leave a small stream's canary pending for ever."""
    canary, sites = config.deployment.canary, max(len(config.sites), 2)
    on_canary = min(sites - 1, max(1, round(canary.fraction * sites)))  # as release.canary_sites picks them
    arm_share = min(on_canary, sites - on_canary) / sites
    return max(1, min(canary.min_labels, math.floor(labelled_per_day * canary.window_days * arm_share)))


def measured(training_set: pl.DataFrame, config: DatasetConfig) -> SampleSizes:
    """The sample sizes for the stream a training window shows: its rows and labelled rows per day
    (synthetic augmented rows are not the stream's)."""
    real = training_set.filter(pl.col(PROVENANCE).ne_missing(AUGMENTED)) if PROVENANCE in training_set.columns else training_set
    days = max(real[TIMESTAMP].dt.date().n_unique(), 1) if real.height else 1
    labelled = real.filter(pl.col(SPLIT).ne_missing(UNLABELLED)).height if SPLIT in real.columns else real.height
    return sample_sizes(real.height / days, labelled / days, config)


def student_schedule(rows: int, steps: int) -> dict:
    """Batch size and epochs for a transfer set of ``rows``: the batch about 1% of it (a power of two
    in 64..1024), the epochs allowing ``EPOCH_HEADROOM`` times about ``steps`` optimiser steps, in
    5..60 (early stopping ends sooner)."""
    rows = max(rows, 1)
    batch = int(min(MAX_BATCH, max(MIN_BATCH, 2 ** round(math.log2(max(rows / 100, 1))))))
    epochs = int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(EPOCH_HEADROOM * steps * batch / rows))))
    return {"batch_size": batch, "epochs": epochs}
