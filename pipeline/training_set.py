"""The training set: a window of recent feature days joined with the gold labels that came back.

The split is time-ordered over the labelled rows (oldest to train, then validation, newest to
test), because a model is always judged on the future it has not seen; shuffling would leak the
future into training. The test split is never used for any choice (early stopping, thresholds,
model selection use validation). Unlabelled rows are kept as ``unlabelled``: distillation and the
labelling methods learn from them.
"""

import polars as pl

from pipeline.dataset import LABEL, ROW_ID, TIMESTAMP, DatasetConfig

SPLIT, WEIGHT, PROVENANCE = "split", "weight", "provenance"
TRAIN, VALIDATION, TEST, UNLABELLED = "train", "validation", "test", "unlabelled"


class TrainingSetError(ValueError):
    """Too few labelled rows in the window to train and evaluate."""


def build_training_set(features: pl.DataFrame, gold: pl.DataFrame, config: DatasetConfig, min_per_split: int = 20) -> pl.DataFrame:
    """Feature rows of the window with their gold label (if any), split, weight and provenance."""
    labels = gold.select(ROW_ID, pl.col(LABEL).alias("__gold")).unique(ROW_ID, keep="last")
    joined = features.join(labels, on=ROW_ID, how="left").with_columns(
        pl.coalesce("__gold", LABEL).alias(LABEL)
    ).drop("__gold").sort(TIMESTAMP, ROW_ID)

    labelled = joined[LABEL].is_not_null()
    rank = labelled.cast(pl.Int64).cum_sum() - 1  # position among labelled rows, in time order
    n = int(labelled.sum())
    split = config.training.split
    n_train, n_val = int(n * split.train), int(n * (split.train + split.validation))
    if min(n_train, n_val - n_train, n - n_val) < min_per_split:
        days = features[TIMESTAMP].dt.date().unique().sort().to_list() if features.height else []
        window = f"{days[0]} .. {days[-1]} ({len(days)} days of features)" if days else "no days of features"
        raise TrainingSetError(
            f"only {n} labelled rows in the window {window}: need at least {min_per_split} in each of "
            "train / validation / test; materialize more days of features and gold_labels"
        )
    split_col = (
        pl.when(~labelled).then(pl.lit(UNLABELLED))
        .when(rank < n_train).then(pl.lit(TRAIN))
        .when(rank < n_val).then(pl.lit(VALIDATION))
        .otherwise(pl.lit(TEST))
    )
    return joined.with_columns(
        split_col.alias(SPLIT),
        pl.lit(1.0).alias(WEIGHT),
        pl.when(labelled).then(pl.lit("gold")).otherwise(None).alias(PROVENANCE),
    )


def split_counts(training_set: pl.DataFrame) -> dict[str, int]:
    counts = training_set.group_by(SPLIT).len()
    return {row[SPLIT]: row["len"] for row in counts.iter_rows(named=True)}
