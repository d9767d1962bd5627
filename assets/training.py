"""Training layer: the training set, where the data layer's features and gold labels meet the
labelling layer's weak and pseudo-labels; the model layer learns from windows of it. A layer of its
own, so the graph reads data -> labelling -> training -> model."""

import dagster as dg
import polars as pl

from assets import metadata as md
from assets.partitions import DAILY, TRAINING_WINDOW, WINDOW_INPUT
from assets.resources import DatasetResource
from pipeline import training_set as training_lib
from pipeline.dataset import TIMESTAMP

GROUP = "training"


@dg.asset(
    group_name=GROUP,
    partitions_def=DAILY,
    ins={
        "features": dg.AssetIn(partition_mapping=TRAINING_WINDOW, metadata=WINDOW_INPUT),
        "gold_labels": dg.AssetIn(partition_mapping=TRAINING_WINDOW, metadata=WINDOW_INPUT),
        "weak_labels": dg.AssetIn(partition_mapping=TRAINING_WINDOW, metadata=WINDOW_INPUT),
        "pseudo_labels": dg.AssetIn(),
    },
)
def training_set(context: dg.AssetExecutionContext, features: pl.DataFrame, gold_labels: pl.DataFrame,
                 weak_labels: pl.DataFrame, pseudo_labels: pl.DataFrame, dataset: DatasetResource) -> dg.MaterializeResult:
    """The newest window of feature days joined with the gold labels that came back, split by device
    (or by time, without an id column or with few devices: the metadata says which and why) into
    train / validation / test on gold labels only (the test split is never used for a choice).
    Unlabelled rows of training devices take a pseudo-label, else a weak label (within a per-class
    quota); rare classes get augmented rows; all of these are training rows with a lower weight. Every row says where its
    label came from (``provenance``); unlabelled rows are kept for distillation."""
    config = dataset.load()
    spec = config.labelling
    frame = training_lib.build_training_set(features, gold_labels, config, [
        training_lib.LabelSource(pseudo_labels, training_lib.PSEUDO, spec.self_training.weight),
        training_lib.LabelSource(weak_labels, training_lib.WEAK, spec.weak.weight, spec.weak.class_quota),
    ])
    counts = training_lib.split_counts(frame)
    days = frame[TIMESTAMP].dt.date()
    choice = training_lib.split_choice(features, config)
    return dg.MaterializeResult(value=frame, metadata={
        "rows": frame.height, **{f"{k}_rows": v for k, v in sorted(counts.items())},
        "split_method": choice.method, "split_reason": choice.reason,
        "train_rows_by_source": md.counts(training_lib.provenance_counts(frame), md.Column("source", description="where the label came from"),
                                          md.Column("rows", "int", "training-split rows")),
        "first_day": str(days.min()), "last_day": str(days.max()),
    })

