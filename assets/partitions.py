"""The dataset behind the graph, its daily partitions and the windows that look back in time.

Partitions must be known when the definitions load, so the dataset YAML is read here, once: the one
named by ``EVERGREEN_DATASET``, or the embedded simulator default. It is the one source of the graph's
shape; ``DatasetResource`` defaults to it, and a resource naming a YAML whose ``DEFINITION_FIELDS``
differ is refused (``check_definition_fields``) rather than run on partitions built from another file.
"""

import datetime as dt
import functools
import warnings
from pathlib import Path

import dagster as dg

from pipeline import federated as fed
from pipeline.dataset import DATASET_ENV, DatasetConfig, DatasetConfigError, dataset_path, load_dataset_config

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

REPORT_WINDOW = _window(DATASET.report.days - 1)
"""The drift reports the day's loop report shows."""

DEFINITION_FIELDS = (
    "partitions.start_date", "partitions.history_days", "partitions.window_days", "partitions.sites",
    "feedback.concept.lookback_days", "feedback.concept.pool_days", "feedback.policy.memory_days",
    "report.days",
)
"""What the definitions build from the dataset when they load: the daily and site partitions and the
windows above. Sites not pinned by ``partitions.sites`` are the definitions' (see ``assets.federated``);
a run's rows of another site are counted outside the site partitions, as a newly landed site's are."""


def _field(config: DatasetConfig, dotted: str) -> object:
    return functools.reduce(getattr, dotted.split("."), config)


def check_definition_fields(path: str | Path, config: DatasetConfig) -> None:
    """Refuse a dataset (the one a run's ``DatasetResource`` names) whose partitions, windows or sites
    are not those the definitions were built from: its assets would read windows of one file's length
    over partitions of another's. The fix is to load the definitions with that dataset."""
    differing = [f"{f} ({_field(config, f)}, loaded {_field(DATASET, f)})"
                 for f in DEFINITION_FIELDS if _field(config, f) != _field(DATASET, f)]
    if differing:
        raise DatasetConfigError(
            f"{path} differs from {DATASET_PATH}, the dataset the definitions were loaded with, in "
            f"{', '.join(differing)}: partitions and windows are built when the code location loads; set "
            f"{DATASET_ENV}={path} and reload the code location, or point the dataset resource at {DATASET_PATH}")


WINDOW_INPUT = {"allow_missing_partitions": True}
"""Input metadata: days of a window that were never materialized are skipped, not an error."""


def _partition_sites(sites: tuple[str, ...]) -> tuple[str, ...]:
    """The sites, each checked to be usable as a partition key (a multi-partition key cannot hold them)."""
    for site in sites:
        if any(c in site for c in "|[],") or site != site.strip() or not site.isprintable():
            raise ValueError(f"{DATASET_PATH}: site {site!r} cannot be a partition key (no | [ ] , or control "
                             "characters): declare partitions.sites or rename the site in the files")
    return sites


SITE_NAMES = _partition_sites(fed.dataset_sites(DATASET))
"""The dataset's sites (``pipeline.federated.dataset_sites``), read once when the definitions load."""
SITES = dg.StaticPartitionsDefinition(list(SITE_NAMES))
