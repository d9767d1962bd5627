"""The training set: a window of recent feature days, the gold labels that came back, and the labels
the labelling methods add, each row with its provenance and weight.

Labelled rows are split by device or by time, never shuffled row by row: rows of one
device an hour apart are near copies, so a row-level shuffle would leak test answers into
training. The device split keeps whole devices out of training, so the test measures unseen
devices on every day of the window. The daily time split cuts each day by time (its oldest rows
train, its newest test), so the newest day, the one that matters after a drift, is learned from as
every other; the window time split (oldest days to train, newest to test) is a backtest, but it
withholds the freshest labels. The device split needs devices: without an id column, or with too
few devices in the window to fill three splits with whole ones, ``auto`` (the default) splits each
day by time and says why.
The test split is never used for any choice (early stopping, thresholds, model selection use
validation).

Only gold labels decide the split and only they reach validation and test. The other sources
(active-learning answers, pseudo, weak and augmented labels) are training labels only: an actively
queued row is chosen for being hard, a pseudo or weak label may be wrong, an augmented row is not
real, and any of them in validation or test would flatter or bias the measure. Unlabelled rows are
kept as ``unlabelled``: distillation and the labelling methods learn from them.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import polars as pl

from pipeline.augmentation import augment
from pipeline.dataset import DEVICE_ID, LABEL, ROW_ID, TIMESTAMP, DatasetConfig
from pipeline.labels import INBOX_SOURCE, LABEL_SOURCE

SPLIT, WEIGHT, PROVENANCE = "split", "weight", "provenance"
TRAIN, VALIDATION, TEST, UNLABELLED = "train", "validation", "test", "unlabelled"
GOLD, ACTIVE, PSEUDO, WEAK, AUGMENTED = "gold", "active", "pseudo", "weak", "augmented"
PROVENANCES = (GOLD, ACTIVE, PSEUDO, WEAK, AUGMENTED)
_POSITION, _SOURCE = "__position", "__source"


class TrainingSetError(ValueError):
    """Too few labelled rows in the window to train and evaluate."""


@dataclass(frozen=True)
class SplitChoice:
    """The split a window gets, and why (shown in the training set's metadata)."""

    method: Literal["device", "daily_time", "time"]
    reason: str


def split_choice(window: pl.DataFrame, config: DatasetConfig) -> SplitChoice:
    """How the rows of ``window`` (the feature rows of the training window) are split.

    Decided on all the window's rows, labelled or not, so every caller that holds the same window
    (the training set, the labelling methods choosing training rows) makes the same choice."""
    spec = config.training.split
    if spec.method in ("time", "daily_time"):
        return SplitChoice(spec.method, f"training.split.method is '{spec.method}'")
    by_time = "each day's oldest labelled rows train, the next validate, its newest test"
    if config.columns.id is None:
        return SplitChoice("daily_time", f"no id column: each row is its own entity, so {by_time}")
    devices = window[DEVICE_ID].n_unique()
    if spec.method == "device":
        return SplitChoice("device", f"training.split.method is 'device' ({devices} devices in the window)")
    if devices < spec.min_devices:
        return SplitChoice("daily_time", f"only {devices} device(s) in the window, fewer than training.split.min_devices "
                                         f"({spec.min_devices}): whole devices cannot fill train / validation / test, so {by_time}")
    return SplitChoice("device", f"{devices} devices in the window: whole devices are held out of training")


def split_gold(features: pl.DataFrame, gold: pl.DataFrame, config: DatasetConfig, min_per_split: int = 20) -> pl.DataFrame:
    """Feature rows of the window with their gold label (if any), split, weight 1 and provenance.

    ``gold`` has ``row_id``, ``label`` and, optionally, ``label_source``: answers from the label
    inbox are ``active`` and always train rows; the others are ``gold``. A later label of a row
    replaces an earlier one (a corrected ticket)."""
    source = pl.col(LABEL_SOURCE) if LABEL_SOURCE in gold.columns else pl.lit("")
    labels = gold.select(ROW_ID, pl.col(LABEL).alias("__gold"), source.alias(_SOURCE)).unique(ROW_ID, keep="last")
    joined = features.join(labels, on=ROW_ID, how="left").with_columns(
        pl.coalesce("__gold", LABEL).alias(LABEL)
    ).drop("__gold").sort(TIMESTAMP, ROW_ID)

    labelled = joined[LABEL].is_not_null()
    split, choice = config.training.split, split_choice(joined, config)
    joined = joined.with_columns(_position(joined, labelled, choice).alias(_POSITION))
    active = pl.col(_SOURCE) == INBOX_SOURCE
    split_col = (
        pl.when(pl.col(LABEL).is_null()).then(pl.lit(UNLABELLED))
        .when(active | (pl.col(_POSITION) < split.train)).then(pl.lit(TRAIN))
        .when(pl.col(_POSITION) < split.train + split.validation).then(pl.lit(VALIDATION))
        .otherwise(pl.lit(TEST))
    )
    frame = joined.with_columns(
        split_col.alias(SPLIT),
        pl.lit(1.0).alias(WEIGHT),
        pl.when(pl.col(LABEL).is_null()).then(None).when(active).then(pl.lit(ACTIVE)).otherwise(pl.lit(GOLD)).alias(PROVENANCE),
    ).drop(_POSITION, _SOURCE)
    _require_enough(frame, features, min_per_split, choice)
    return frame


def _require_enough(frame: pl.DataFrame, features: pl.DataFrame, min_per_split: int, choice: SplitChoice) -> None:
    counts = split_counts(frame)
    if min(counts.get(s, 0) for s in (TRAIN, VALIDATION, TEST)) < min_per_split:
        days = features[TIMESTAMP].dt.date().unique().sort().to_list() if features.height else []
        window = f"{days[0]} .. {days[-1]} ({len(days)} days of features)" if days else "no days of features"
        labelled = sum(v for k, v in counts.items() if k != UNLABELLED)
        raise TrainingSetError(
            f"only {labelled} labelled rows in the window {window}: need at least {min_per_split} in each of "
            f"train / validation / test, found {counts.get(TRAIN, 0)} / {counts.get(VALIDATION, 0)} / {counts.get(TEST, 0)} "
            f"split by {choice.method} ({choice.reason}); materialize more days of features and gold_labels"
        )


def _position(joined: pl.DataFrame, labelled: pl.Series, choice: SplitChoice) -> pl.Series:
    """Each row's place in [0, 1): below ``train`` goes to train, then validation, then test.

    By device: a uniform number from the (keyed-hash) device id, the same for all of a device's
    rows and stable from window to window. By time: the row's rank among the labelled rows of the
    window, or of its day (``daily_time``); ``joined`` is in time order.
    """
    if choice.method == "device":
        return device_position(joined[DEVICE_ID])
    frame = pl.DataFrame({"labelled": labelled.cast(pl.Int64), "day": joined[TIMESTAMP].dt.date()})
    over = "day" if choice.method == "daily_time" else pl.lit(0)
    rank = (pl.col("labelled").cum_sum() - 1).over(over)
    return frame.select((rank / pl.col("labelled").sum().over(over).clip(1)).alias(_POSITION)).to_series()


def device_position(device_ids: pl.Series) -> pl.Series:
    return device_ids.str.slice(0, 8).str.to_integer(base=16) / 2**32


def on_training_device(frame: pl.DataFrame, config: DatasetConfig) -> pl.Series:
    """Rows that may carry a training-only label: with the device split, rows of training devices
    (a validation or test device must stay unseen); with the time split, any row. ``frame`` is the
    window (as ``split_gold`` got it or returned it), so the split is chosen as it chose."""
    if split_choice(frame, config).method == "device":
        return device_position(frame[DEVICE_ID]) < config.training.split.train
    return pl.Series([True] * frame.height, dtype=pl.Boolean)


@dataclass(frozen=True)
class LabelSource:
    """Labels from one labelling method for unlabelled training rows: ``labels`` has ``row_id``,
    ``label`` and, to rank them under a quota, ``confidence``."""

    labels: pl.DataFrame
    provenance: str
    weight: float
    class_quota: float | None = None
    """At most this many labels per gold training label of the class (the most confident first):
    a method that labels thousands of rows must not outweigh the few hundred real labels."""


def add_labels(frame: pl.DataFrame, sources: Sequence[LabelSource], config: DatasetConfig) -> pl.DataFrame:
    """Label unlabelled rows of training devices from ``sources``, the first source that labels a row
    winning; they become train rows with the source's weight and provenance."""
    eligible = (frame[SPLIT] == UNLABELLED) & on_training_device(frame, config)
    frame = frame.with_columns(eligible.alias("__eligible"))
    real = dict(frame.filter(pl.col(SPLIT) == TRAIN).group_by(LABEL).len().iter_rows())
    for source in sources:
        open_rows = frame.filter(pl.col("__eligible") & (pl.col(SPLIT) == UNLABELLED)).select(ROW_ID)
        offered = source.labels.join(open_rows, on=ROW_ID).unique(ROW_ID, keep="first")
        caps = None if source.class_quota is None else {c: int(source.class_quota * n) for c, n in real.items()}
        picked = within_quota(offered, caps)
        if picked.height == 0:
            continue
        frame = frame.join(picked.select(ROW_ID, pl.col(LABEL).alias("__l")), on=ROW_ID, how="left")
        take = pl.col("__l").is_not_null()
        frame = frame.with_columns(
            pl.when(take).then(pl.col("__l")).otherwise(pl.col(LABEL)).alias(LABEL),
            pl.when(take).then(pl.lit(source.weight)).otherwise(pl.col(WEIGHT)).alias(WEIGHT),
            pl.when(take).then(pl.lit(source.provenance)).otherwise(pl.col(PROVENANCE)).alias(PROVENANCE),
            pl.when(take).then(pl.lit(TRAIN)).otherwise(pl.col(SPLIT)).alias(SPLIT),
        ).drop("__l")
    return frame.drop("__eligible")


def within_quota(labels: pl.DataFrame, caps: dict[str, int] | None) -> pl.DataFrame:
    """At most ``caps[label]`` labels of each class (none of a class without a cap; all of them when
    ``caps`` is None), the most confident first when ``labels`` has a ``confidence``."""
    ranked = labels.sort("confidence", ROW_ID, descending=[True, False]) if "confidence" in labels.columns else labels.sort(ROW_ID)
    if caps is None or ranked.height == 0:
        return ranked
    ranked = ranked.with_columns(pl.int_range(pl.len()).over(LABEL).alias("__rank"))
    cap = pl.col(LABEL).replace_strict(caps, default=0, return_dtype=pl.Int64)
    return ranked.filter(pl.col("__rank") < cap).drop("__rank")


def build_training_set(features: pl.DataFrame, gold: pl.DataFrame, config: DatasetConfig,
                       sources: Sequence[LabelSource] = (), min_per_split: int = 20) -> pl.DataFrame:
    """The window's rows, split on gold labels, with the labelling methods' labels added to unlabelled
    training rows (``sources`` in priority order) and augmented rare-class rows appended. Augmentation
    grows from real labels only (gold and active training rows): interpolating between pseudo or
    weak labels would multiply their mistakes."""
    frame = add_labels(split_gold(features, gold, config, min_per_split), sources, config)
    spec = config.labelling.augmentation
    if not spec.enabled:
        return frame
    real = frame.filter((pl.col(SPLIT) == TRAIN) & pl.col(PROVENANCE).is_in([GOLD, ACTIVE]))
    synthetic = augment(real, config).with_columns(
        pl.lit(TRAIN).alias(SPLIT), pl.lit(spec.weight).alias(WEIGHT), pl.lit(AUGMENTED).alias(PROVENANCE))
    return pl.concat([frame, synthetic.select(frame.columns)], how="vertical_relaxed")


def split_counts(training_set: pl.DataFrame) -> dict[str, int]:
    counts = training_set.group_by(SPLIT).len()
    return {row[SPLIT]: row["len"] for row in counts.iter_rows(named=True)}


def provenance_counts(training_set: pl.DataFrame) -> dict[str, int]:
    """Training-split rows per source of their label."""
    counts = training_set.filter(pl.col(SPLIT) == TRAIN).group_by(PROVENANCE).len()
    found = {row[PROVENANCE]: row["len"] for row in counts.iter_rows(named=True)}
    return {p: found.get(p, 0) for p in PROVENANCES}
