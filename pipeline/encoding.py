"""Preprocessing constants fitted on the training split, and the matrices each model reads.

The teacher (LightGBM) reads raw numeric values and integer category codes; the student (an MLP)
reads standardised numerics, one-hot categories and piecewise-linear bins of the numerics through
the edge runtime's ``encode``. Both use one constants dict, fitted on training rows only and shipped
in the edge package's manifest.
"""

from typing import cast

import numpy as np
import polars as pl

from pipeline.evergreen_edge import Encoder, encode


def fit_preprocessing(train: pl.DataFrame, numeric: list[str], categorical: list[str], numeric_bins: int = 0) -> dict:
    """Medians, means, standard deviations and category vocabularies of the training rows, and, with
    ``numeric_bins``, each numeric's quantile edges for the student's piecewise-linear encoding
    (fewer where quantiles coincide; none for a constant column). Preprocessing only a LightGBM
    model reads needs no bins."""
    num_specs = []
    for name in numeric:
        col = train[name].cast(pl.Float64).fill_nan(None)
        median = cast(float | None, col.median())  # polars types a column's median as any literal; this one is Float64
        fill = float(median) if median is not None else 0.0
        filled = col.fill_null(fill)
        std = float(cast(float | None, filled.std()) or 0.0)
        spec = {"name": name, "fill": fill, "mean": float(cast(float, filled.mean())), "std": std if std > 1e-9 else 1.0}
        if numeric_bins:
            spec["edges"] = bin_edges(filled.to_numpy(), numeric_bins)
        num_specs.append(spec)
    cat_specs = [
        {"name": name, "categories": sorted(train[name].drop_nulls().cast(pl.String).unique().to_list())}
        for name in categorical
    ]
    preprocessing = {"numeric": num_specs, "categorical": cat_specs, "feature_order": numeric + categorical}
    return preprocessing | {"input_width": Encoder(preprocessing).width}


def bin_edges(values: np.ndarray, bins: int) -> list[float]:
    """Edges of up to ``bins`` bins holding about as many of ``values`` each; [] when they cannot
    make one bin."""
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1))) if len(values) else np.empty(0)
    return edges.tolist() if len(edges) > 1 else []


def columns_of(frame: pl.DataFrame, preprocessing: dict) -> dict[str, np.ndarray]:
    numeric = {s["name"] for s in preprocessing["numeric"]}
    return {
        name: frame[name].cast(pl.Float64).fill_null(np.nan).to_numpy() if name in numeric
        else frame[name].cast(pl.String).fill_null("").to_numpy()
        for name in preprocessing["feature_order"]
    }


def student_matrix(frame: pl.DataFrame, preprocessing: dict) -> np.ndarray:
    return encode(columns_of(frame, preprocessing), preprocessing)


def teacher_matrix(frame: pl.DataFrame, preprocessing: dict) -> np.ndarray:
    """Numeric values as they are (LightGBM handles NaN), categories as codes (unseen -> NaN)."""
    cols = [frame[s["name"]].cast(pl.Float64).fill_null(np.nan).to_numpy() for s in preprocessing["numeric"]]
    for spec in preprocessing["categorical"]:
        index = {c: float(i) for i, c in enumerate(spec["categories"])}
        values = frame[spec["name"]].cast(pl.String).to_list()
        cols.append(np.array([index.get(v, np.nan) for v in values], dtype=np.float64))
    return np.column_stack(cols) if cols else np.empty((frame.height, 0))


NO_LABEL = -1


def label_codes(frame: pl.DataFrame, classes: tuple[str, ...]) -> np.ndarray:
    """Class indices of the ``label`` column; ``NO_LABEL`` where a row has none. An unknown class
    name raises: cleaning has already quarantined those, so one here is a bug."""
    codes = frame["label"].replace_strict({c: i for i, c in enumerate(classes)}, return_dtype=pl.Int64)
    return codes.fill_null(NO_LABEL).to_numpy()
