"""Sample sizes that follow the data, not the simulator.

The YAML's windows and counts were tuned on the simulator (about 3,800 rows a day); a user's stream
may have 48. A statistic needs a number of rows, not a number of days: where a day holds fewer rows
than a test needs, the window widens (more days pooled) up to what the data holds; counts that only
stand for "a day's worth" shrink to what a day of this stream brings. The YAML values stay the
defaults and caps, so a stream with the simulator's volume behaves exactly as configured.
"""

import math
from dataclasses import dataclass

from pipeline.dataset import DatasetConfig

MIN_BATCH, MAX_BATCH, MIN_EPOCHS, MAX_EPOCHS = 64, 1024, 5, 40


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
    regression_days: int
    """Newest days of the test split the regression gate compares candidate and production on."""
    canary_min_labels: int
    """Returned labels each canary arm needs."""

    def to_json(self) -> dict:
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def sample_sizes(rows_per_day: float, labelled_per_day: float, config: DatasetConfig) -> SampleSizes:
    """Reference and regression windows widen until they hold the rows their statistics need; the
    incremental update asks for at most a day of new labelled training rows; a canary arm for at
    most the labels its share of the sites returns over the canary window (it keeps waiting, and
    pooling later days, until it has them)."""
    window = config.partitions.window_days
    drift, policy = config.feedback.drift, config.feedback.policy
    gates, canary, split = config.deployment.gates, config.deployment.canary, config.training.split
    test_per_day = labelled_per_day * (1 - split.train - split.validation)
    arm_share = max(canary.fraction, 1 / max(len(config.sites), 1)) if canary.fraction else 1.0
    arm_labels = math.floor(labelled_per_day * canary.window_days * arm_share)
    return SampleSizes(
        rows_per_day=rows_per_day, labelled_per_day=labelled_per_day,
        reference_days=days_for(drift.reference_min_rows, rows_per_day, drift.reference_days, window),
        min_new_rows=max(1, min(policy.min_new_rows, math.floor(labelled_per_day * split.train))),
        regression_days=days_for(gates.regression_min_rows, test_per_day, gates.regression_days, window),
        canary_min_labels=max(1, min(canary.min_labels, arm_labels)),
    )


def student_schedule(rows: int, steps: int) -> dict:
    """Batch size and epochs for a transfer set of ``rows``: the batch about 1% of it (a power of two
    in 64..1024), the epochs giving about ``steps`` optimiser steps, in 5..40 (early stopping usually
    ends sooner)."""
    rows = max(rows, 1)
    batch = int(min(MAX_BATCH, max(MIN_BATCH, 2 ** round(math.log2(max(rows / 100, 1))))))
    epochs = int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(steps * batch / rows))))
    return {"batch_size": batch, "epochs": epochs}
