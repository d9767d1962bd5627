"""Gold labels: true labels as they come back, partitioned by the day they arrive.

Labels are late and partial (a ticket is closed days after the fault), so a gold-label partition
holds the labels that *arrived* that day, each pointing at the reading it labels by ``row_id``.
They come from the label column of the day's own data (lag 0), from the label inbox (answers to
``label_queue``, source ``inbox``) and, in demo mode, from the simulator's oracle, which returns a
fraction of past rows after a lag (the ticket system) and answers the queue.
"""

import datetime as dt

import polars as pl

from pipeline import ids
from pipeline.dataset import LABEL, ROW_ID, TIMESTAMP, DatasetConfig
from pipeline.simulator import TRUTH, returned_labels

OBSERVED_AT, ARRIVED_ON, LABEL_SOURCE = "observed_at", "arrived_on", "label_source"
INBOX_SOURCE, RETURNED_SOURCE = "inbox", "returned"
GOLD_SCHEMA = pl.Schema({ROW_ID: pl.String(), LABEL: pl.String(), OBSERVED_AT: pl.Datetime("us", "UTC"), ARRIVED_ON: pl.Date(),
                         LABEL_SOURCE: pl.String()})


def gold_labels(clean: pl.DataFrame, config: DatasetConfig, day: dt.date, hash_key: bytes,
                answers: pl.DataFrame | None = None, returned: pl.DataFrame | None = None) -> pl.DataFrame:
    """Labels that arrived on ``day``: in-data labels of the day's rows, the oracle's returns, the
    label inbox's checked ``answers`` and its ``returned`` late labels (each ``row_id``, ``label``,
    ``observed_at``). A row labelled twice keeps the first: the data's own label, then the ticket
    system's, then the inbox's."""
    in_data = clean.filter(pl.col(LABEL).is_not_null()).select(
        ROW_ID, LABEL, pl.col(TIMESTAMP).alias(OBSERVED_AT), pl.lit(day).alias(ARRIVED_ON),
        pl.lit("data").alias(LABEL_SOURCE),
    )
    parts = [in_data.cast(GOLD_SCHEMA)]
    if config.source.kind == "simulator":
        oracle = returned_labels(config.simulator, day)
        parts.append(oracle.select(
            ids.row_id(pl.col("device_id"), pl.col("ts"), hash_key).alias(ROW_ID),
            pl.col(TRUTH).alias(LABEL), pl.col("ts").alias(OBSERVED_AT), pl.lit(day).alias(ARRIVED_ON),
            pl.lit("oracle").alias(LABEL_SOURCE),
        ).cast(GOLD_SCHEMA))
    for source, frame in ((RETURNED_SOURCE, returned), (INBOX_SOURCE, answers)):
        if frame is not None:
            parts.append(frame.select(
                ROW_ID, LABEL, pl.col(OBSERVED_AT), pl.lit(day).alias(ARRIVED_ON), pl.lit(source).alias(LABEL_SOURCE),
            ).cast(GOLD_SCHEMA))
    return pl.concat(parts).unique(subset=ROW_ID, keep="first", maintain_order=True)


def unbiased(gold: pl.DataFrame) -> pl.DataFrame:
    """The labels a model's accuracy can be measured on: all but the label inbox's answers. Those rows
    were queued *because* a model was unsure of them, so accuracy on them is far below the model's
    accuracy (0.876 against 0.922 in a replay, which raised a false concept-drift alarm)."""
    return gold.filter(pl.col(LABEL_SOURCE).ne_missing(INBOX_SOURCE)) if LABEL_SOURCE in gold.columns else gold
