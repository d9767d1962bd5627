"""The training set: a window of recent feature days joined with the gold labels that came back.

Labelled rows are split by device (the default) or by time, never shuffled row by row: rows of one
device an hour apart are near copies, so a row-level shuffle would leak test answers into
training. The device split keeps whole devices out of training, so the test measures unseen
devices on every day of the window; the time split (oldest to train, newest to test) is a
backtest, but it withholds the freshest labels, which after a drift are the ones that matter.
The test split is never used for any choice (early stopping, thresholds, model selection use
validation). Unlabelled rows are kept as ``unlabelled``: distillation and the labelling methods
learn from them.
"""

import polars as pl

from pipeline.dataset import DEVICE_ID, LABEL, ROW_ID, TIMESTAMP, DatasetConfig, SplitSpec

SPLIT, WEIGHT, PROVENANCE = "split", "weight", "provenance"
TRAIN, VALIDATION, TEST, UNLABELLED = "train", "validation", "test", "unlabelled"
_POSITION = "__position"


class TrainingSetError(ValueError):
    """Too few labelled rows in the window to train and evaluate."""


def build_training_set(features: pl.DataFrame, gold: pl.DataFrame, config: DatasetConfig, min_per_split: int = 20) -> pl.DataFrame:
    """Feature rows of the window with their gold label (if any), split, weight and provenance."""
    labels = gold.select(ROW_ID, pl.col(LABEL).alias("__gold")).unique(ROW_ID, keep="last")
    joined = features.join(labels, on=ROW_ID, how="left").with_columns(
        pl.coalesce("__gold", LABEL).alias(LABEL)
    ).drop("__gold").sort(TIMESTAMP, ROW_ID)

    labelled = joined[LABEL].is_not_null()
    split = config.training.split
    joined = joined.with_columns(_position(joined, labelled, split).alias(_POSITION))
    position = joined[_POSITION]
    n_train = int((labelled & (position < split.train)).sum())
    n_val = int((labelled & (position < split.train + split.validation)).sum())
    n = int(labelled.sum())
    if min(n_train, n_val - n_train, n - n_val) < min_per_split:
        days = features[TIMESTAMP].dt.date().unique().sort().to_list() if features.height else []
        window = f"{days[0]} .. {days[-1]} ({len(days)} days of features)" if days else "no days of features"
        raise TrainingSetError(
            f"only {n} labelled rows in the window {window}: need at least {min_per_split} in each of "
            "train / validation / test; materialize more days of features and gold_labels"
        )
    split_col = (
        pl.when(pl.col(LABEL).is_null()).then(pl.lit(UNLABELLED))
        .when(pl.col(_POSITION) < split.train).then(pl.lit(TRAIN))
        .when(pl.col(_POSITION) < split.train + split.validation).then(pl.lit(VALIDATION))
        .otherwise(pl.lit(TEST))
    )
    return joined.with_columns(
        split_col.alias(SPLIT),
        pl.lit(1.0).alias(WEIGHT),
        pl.when(pl.col(LABEL).is_not_null()).then(pl.lit("gold")).otherwise(None).alias(PROVENANCE),
    ).drop(_POSITION)


def _position(joined: pl.DataFrame, labelled: pl.Series, split: SplitSpec) -> pl.Series:
    """Each row's place in [0, 1): below ``train`` goes to train, then validation, then test.

    By device: a uniform number from the (keyed-hash) device id, the same for all of a device's
    rows and stable from window to window. By time: the row's rank among labelled rows.
    """
    if split.method == "device":
        return joined[DEVICE_ID].str.slice(0, 8).str.to_integer(base=16) / 2**32
    rank = labelled.cast(pl.Int64).cum_sum() - 1
    return rank / max(int(labelled.sum()), 1)


def split_counts(training_set: pl.DataFrame) -> dict[str, int]:
    counts = training_set.group_by(SPLIT).len()
    return {row[SPLIT]: row["len"] for row in counts.iter_rows(named=True)}
