"""Augmentation for rare classes: synthetic training rows, so a class seen a few dozen times still
shapes the model.

``interpolate`` is SMOTE's idea (a point on the segment between a row and one of its nearest
same-class neighbours). imbalanced-learn's SMOTE is not used because it refuses missing values,
and the ``*_delta`` features are missing for every device without history; here a value missing at
either end keeps the base row's value. ``noise`` jitters a row by a fraction of each feature's
spread. Categorical features, timestamp, device and site are the base row's; the row id says
which row it grew from. The caller decides where the rows go (the training split only).
Neighbours come from scipy's KDTree: scikit-learn's search asks joblib for the physical core
count, which runs ``lscpu`` in a subprocess in every process that trains.
"""

import math

import numpy as np
import polars as pl
from scipy.spatial import KDTree

from pipeline.dataset import LABEL, ROW_ID, AugmentationSpec, DatasetConfig
from pipeline.features import model_feature_names


def augment(rows: pl.DataFrame, config: DatasetConfig) -> pl.DataFrame:
    """Synthetic rows (the columns of ``rows``) topping each rare class up to ``min_class_fraction``."""
    spec = config.labelling.augmentation
    numeric, _ = model_feature_names(config)
    rng = np.random.default_rng(config.training.seed)
    target = math.ceil(spec.min_class_fraction * rows.height)
    parts = []
    for label in sorted(rows[LABEL].drop_nulls().unique().to_list()):
        group = rows.filter(pl.col(LABEL) == label)
        need = min(target - group.height, spec.max_per_real_row * group.height)
        if need > 0:
            parts.append(_synthesise(group, numeric, need, spec, rng))
    return pl.concat(parts) if parts else rows.clear()


def _synthesise(group: pl.DataFrame, numeric: list[str], need: int, spec: AugmentationSpec,
                rng: np.random.Generator) -> pl.DataFrame:
    values = group.select(numeric).cast(pl.Float64).fill_null(np.nan).to_numpy()
    base = rng.integers(0, group.height, size=need)
    if spec.method == "interpolate" and group.height >= 2:
        new = _interpolate(values, base, spec.neighbours, rng)
    else:
        spread = np.nan_to_num(np.nanstd(values, axis=0)) if group.height > 1 else np.zeros(values.shape[1])
        new = values[base] + rng.normal(0.0, 1.0, size=(need, len(numeric))) * spread * spec.noise_scale
    synthetic = group[base]
    return synthetic.with_columns(
        *(pl.Series(name, new[:, j]).fill_nan(None) for j, name in enumerate(numeric)),
        pl.format("aug:{}:{}", pl.col(ROW_ID), pl.int_range(0, need)).alias(ROW_ID),
    )


def _interpolate(values: np.ndarray, base: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Each base row moved a uniform fraction of the way to one of its ``k`` nearest neighbours,
    found on standardised values with missing ones at the column median."""
    known = ~np.isnan(values)
    median = np.array([np.median(col[ok]) if ok.any() else 0.0 for col, ok in zip(values.T, known.T)])
    filled = np.where(known, values, median)
    scale = filled.std(axis=0)
    scaled = filled / np.where(scale > 0, scale, 1.0)
    n_neighbours = min(k + 1, len(values))
    _, index = KDTree(scaled).query(scaled[base], k=n_neighbours)
    partner = index[np.arange(len(base)), rng.integers(1, n_neighbours, size=len(base))]
    step = rng.uniform(size=(len(base), 1))
    moved = values[base] + step * (values[partner] - values[base])
    return np.where(np.isnan(moved), values[base], moved)
