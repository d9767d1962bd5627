"""Gold labels: true labels as they come back, partitioned by the day they arrive.

Labels are late and partial (a ticket is closed days after the fault), so a gold-label partition
holds the labels that *arrived* that day, each pointing at the reading it labels by ``row_id``.
They come from the label column of the day's own data (lag 0) and, in demo mode, from the
simulator's oracle, which returns a fraction of past rows after a lag.
"""

import datetime as dt

import polars as pl

from pipeline import ids
from pipeline.dataset import LABEL, ROW_ID, TIMESTAMP, DatasetConfig
from pipeline.simulator import TRUTH, returned_labels

OBSERVED_AT, ARRIVED_ON, LABEL_SOURCE = "observed_at", "arrived_on", "label_source"
GOLD_SCHEMA = {ROW_ID: pl.String, LABEL: pl.String, OBSERVED_AT: pl.Datetime("us", "UTC"), ARRIVED_ON: pl.Date, LABEL_SOURCE: pl.String}


def gold_labels(clean: pl.DataFrame, config: DatasetConfig, day: dt.date, hash_key: bytes) -> pl.DataFrame:
    """Labels that arrived on ``day``: in-data labels of the day's rows, plus the oracle's returns."""
    in_data = clean.filter(pl.col(LABEL).is_not_null()).select(
        ROW_ID, LABEL, pl.col(TIMESTAMP).alias(OBSERVED_AT), pl.lit(day).alias(ARRIVED_ON),
        pl.lit("data").alias(LABEL_SOURCE),
    )
    parts = [in_data.cast(GOLD_SCHEMA)]
    if config.source.kind == "simulator":
        returned = returned_labels(config.simulator, day)
        parts.append(returned.select(
            ids.row_id(pl.col("device_id"), pl.col("ts"), hash_key).alias(ROW_ID),
            pl.col(TRUTH).alias(LABEL), pl.col("ts").alias(OBSERVED_AT), pl.lit(day).alias(ARRIVED_ON),
            pl.lit("oracle").alias(LABEL_SOURCE),
        ).cast(GOLD_SCHEMA))
    return pl.concat(parts).unique(subset=ROW_ID, keep="first", maintain_order=True)
