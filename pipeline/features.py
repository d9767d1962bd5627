"""Model features: the cleaned readings, the hour of day, and deltas against the device's history.

A reading means more against the device's own past than in absolute terms: a modem whose received
power dropped 3 dB since last week is ageing, whatever its line length. ``<name>_delta`` is the value
minus the device's mean over the previous days' partitions (null when the device has no history).
"""

import polars as pl

from pipeline.dataset import DEVICE_ID, HOUR_FEATURE as HOUR, LABEL, ROW_ID, SITE, TIMESTAMP, DatasetConfig


def delta_name(feature: str) -> str:
    return f"{feature}_delta"


def model_feature_names(config: DatasetConfig) -> tuple[list[str], list[str]]:
    """(numeric, categorical) model inputs, in the order the models and the edge package use."""
    numeric = [f.name for f in config.numeric_features]
    numeric += [delta_name(f.name) for f in config.numeric_features if f.history]
    return numeric + [HOUR], [f.name for f in config.categorical_features]


def derived_feature_notes(config: DatasetConfig) -> dict[str, str]:
    """How a device computes the inputs that are not raw readings (shipped in the manifest)."""
    notes = {HOUR: f"hour of day (0-23, UTC) of the reading's {TIMESTAMP}"}
    days = config.partitions.history_days
    for f in config.numeric_features:
        if f.history:
            notes[delta_name(f.name)] = (f"{f.name} minus this device's mean {f.name} over the previous {days} "
                                         "days; missing when there is no history (the model then uses the training median)")
    return notes


def build_features(clean: pl.DataFrame, history: pl.DataFrame, config: DatasetConfig) -> pl.DataFrame:
    """One day's feature rows; ``history`` is the clean rows of the preceding days (may be empty)."""
    tracked = [f.name for f in config.numeric_features if f.history]
    frame = clean.with_columns(pl.col(TIMESTAMP).dt.hour().cast(pl.Float64).alias(HOUR))
    if tracked:
        if history.height:
            means = history.group_by(DEVICE_ID).agg(pl.col(tracked).mean().name.suffix("__hist"))
            frame = frame.join(means, on=DEVICE_ID, how="left")
        else:
            frame = frame.with_columns(pl.lit(None, pl.Float64).alias(f"{n}__hist") for n in tracked)
        frame = frame.with_columns((pl.col(n) - pl.col(f"{n}__hist")).alias(delta_name(n)) for n in tracked)
    numeric, categorical = model_feature_names(config)
    return frame.select(ROW_ID, TIMESTAMP, DEVICE_ID, SITE, *numeric, *categorical, LABEL)
