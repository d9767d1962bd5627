"""The drift reference a registry version carries: the rows of the world its model was fitted to."""

import polars as pl

from pipeline import features as feature_lib, sample_sizes
from pipeline.dataset import TIMESTAMP, DatasetConfig
from pipeline.training_set import AUGMENTED, PROVENANCE


def reference_rows(training_set: pl.DataFrame, config: DatasetConfig) -> pl.DataFrame:
    """The model inputs of the newest ``reference_days`` of the window, more on a stream whose days are
    small (``sample_sizes``; a seeded sample of at most ``reference_max_rows``): the world this model
    was fitted to, for the drift report. Augmented rows are not of that world: they over-represent
    the rare classes on purpose."""
    spec, reference_days = config.feedback.drift, sample_sizes.measured(training_set, config).reference_days
    training_set = training_set.filter(pl.col(PROVENANCE).ne_missing(AUGMENTED))
    numeric, categorical = feature_lib.model_feature_names(config)
    training_days = sorted(training_set[TIMESTAMP].dt.date().unique())
    newest = training_set.filter(pl.col(TIMESTAMP).dt.date().is_in(training_days[-reference_days:]))
    rows = newest.select(TIMESTAMP, *numeric, *categorical)
    return rows.sample(spec.reference_max_rows, seed=config.training.seed) if rows.height > spec.reference_max_rows else rows
