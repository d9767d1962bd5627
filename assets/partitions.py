"""The dataset behind the graph, its daily partitions and the windows that look back in time.

Partitions must be known when the definitions load, so the dataset YAML is read here, once: the one
named by ``EVERGREEN_DATASET``, or the embedded simulator default.
"""

import datetime as dt
import warnings
from pathlib import Path

import dagster as dg

from pipeline.dataset import dataset_path, load_dataset_config

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATASET_PATH = dataset_path()
DATASET = load_dataset_config(DATASET_PATH)

DAILY = dg.DailyPartitionsDefinition(start_date=DATASET.partitions.start_date.isoformat())


def partition_day(context: dg.AssetExecutionContext) -> dt.date:
    return dt.date.fromisoformat(context.partition_key)


def _window(days_back: int) -> dg.TimeWindowPartitionMapping:
    """This partition and ``days_back`` before it; days before the first partition are simply absent.
    (``allow_nonexistent_upstream_partitions`` is beta in 1.13: its warning is silenced on purpose.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.TimeWindowPartitionMapping(start_offset=-days_back, end_offset=0, allow_nonexistent_upstream_partitions=True)


HISTORY_WINDOW = _window(DATASET.partitions.history_days)
"""The partition itself and the days before it, for features that compare with a device's past."""

TRAINING_WINDOW = _window(DATASET.partitions.window_days - 1)
"""The newest ``window_days`` partitions up to this one: what a model of this day learns from."""

LABEL_LOOKBACK = _window(DATASET.feedback.concept.lookback_days)
"""The partition and the days whose readings today's returned labels may refer to."""

DRIFT_POOL = _window(DATASET.feedback.concept.pool_days - 1)
"""The days whose returned labels (and inputs) the drift report may pool when a day has too few."""

DRIFT_READINGS = _window(DATASET.feedback.concept.pool_days - 1 + DATASET.feedback.concept.lookback_days)
"""The readings the labels of the pooled days may refer to."""

POLICY_MEMORY = _window(DATASET.feedback.policy.memory_days)
"""The drift reports the retraining policy reads to find where a drift event started."""

WINDOW_INPUT = {"allow_missing_partitions": True}
"""Input metadata: days of a window that were never materialized are skipped, not an error."""
