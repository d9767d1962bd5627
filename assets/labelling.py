"""Labelling: make scarce, late labels go far.

``label_queue`` asks a person about the day's most informative rows (active learning) through the
label inbox; ``gold_labels`` (data layer) merges the answers. ``weak_labels`` combines domain rules
with a label model; ``pseudo_labels`` lets the teacher label what it is sure of (self-training).
``training_set`` adds both, and augmented rare-class rows, to the training split only.
"""

import dagster as dg
import numpy as np
import polars as pl

from assets import metadata as md
from assets.common import per_class
from assets.partitions import DAILY, TRAINING_WINDOW, WINDOW_INPUT, partition_day
from assets.resources import DatasetResource, StorageResource
from pipeline import active_learning, self_training, weak_supervision
from pipeline.dataset import TIMESTAMP, DatasetConfig
from pipeline.features import model_feature_names
from pipeline.training_set import SPLIT, TRAIN, UNLABELLED, on_training_device, split_gold

GROUP = "labelling"
WINDOW_INS = {
    "features": dg.AssetIn(partition_mapping=TRAINING_WINDOW, metadata=WINDOW_INPUT),
    "gold_labels": dg.AssetIn(partition_mapping=TRAINING_WINDOW, metadata=WINDOW_INPUT),
}


@dg.asset(group_name=GROUP, partitions_def=DAILY, ins=WINDOW_INS)
def label_queue(context: dg.AssetExecutionContext, features: pl.DataFrame, gold_labels: pl.DataFrame,
                dataset: DatasetResource, storage: StorageResource) -> dg.MaterializeResult:
    """The day's rows most worth a person's label, within the daily budget: where a committee of
    LightGBM models trained on the window's gold labels disagrees most (query by committee), or
    where the production teacher is least sure (entropy or margin). Only unlabelled rows of training
    devices are asked about. Written to the label inbox as ``queue/<day>.csv`` to fill in."""
    config, day = dataset.load(), partition_day(context)
    spec = config.labelling.active
    window = split_gold(features, gold_labels, config, min_per_split=0)
    candidates = window.filter((pl.col(TIMESTAMP).dt.date() == day) & (pl.col(SPLIT) == UNLABELLED)
                               & on_training_device(window, config))
    if spec.budget_per_day == 0 or candidates.height == 0:
        reason = "budget_per_day is 0" if spec.budget_per_day == 0 else "no unlabelled row of a training device on this day"
        return dg.MaterializeResult(metadata={"rows": 0, "skipped": reason})
    scored = active_learning.score_candidates(candidates, window.filter(pl.col(SPLIT) == TRAIN),
                                              storage.production_teacher(), config, seed=day.toordinal())
    chosen = active_learning.select(candidates, scored.scores, spec.budget_per_day)
    path = storage.label_inbox.write_queue(day, _for_a_person(chosen, config))
    return dg.MaterializeResult(metadata={
        "rows": chosen.height, "candidates": candidates.height, "method": scored.method,
        "path": dg.MetadataValue.path(str(path)),
        "median_score": md.metric(float(np.median(chosen[active_learning.SCORE].to_numpy()))),
    })


def _for_a_person(chosen: pl.DataFrame, config: DatasetConfig) -> pl.DataFrame:
    numeric, categorical = model_feature_names(config)
    raw = [name for name in numeric if name in {f.name for f in config.features}]
    return chosen.select("row_id", TIMESTAMP, "site", "device_id", *raw, *categorical, active_learning.SCORE)


@dg.asset(group_name=GROUP, partitions_def=DAILY,
          ins={"gold_labels": dg.AssetIn(partition_mapping=TRAINING_WINDOW, metadata=WINDOW_INPUT)})
def weak_labels(features: pl.DataFrame, gold_labels: pl.DataFrame, dataset: DatasetResource) -> dg.Output:
    """The day's rows labelled by the labelling functions (YAML rules and Python ones), their votes
    combined by snorkel's label model with the window's gold class balance as prior. Kept where the
    combined label is confident enough; per function: coverage, overlap, conflict, estimated accuracy."""
    config = dataset.load()
    if not config.labelling.weak.enabled:
        return dg.Output(pl.DataFrame(schema=weak_supervision.WEAK_SCHEMA), metadata={"rows": 0, "skipped": "disabled"})
    result = weak_supervision.weak_labels(features, config, weak_supervision.class_balance(gold_labels, config.classes),
                                          seed=config.training.seed)
    return dg.Output(result.labels, metadata={
        "rows": result.labels.height, "covered_rows": result.covered, "day_rows": features.height,
        "per_class": per_class(result.labels),
        "functions": md.table(({"function": name, **f} for name, f in result.functions.items()), FUNCTION_COLUMNS),
    })


FUNCTION_COLUMNS = [
    md.Column("function"), md.Column("label", description="the class it votes for"),
    md.Column("coverage", "float", "share of the day's rows it labels"), md.Column("overlap", "float", "share it labels with another function"),
    md.Column("conflict", "float", "share where another function disagrees"),
    md.Column("estimated_accuracy", "float", "the label model's estimate (empty: no votes)"),
]
ROUND_COLUMNS = [
    md.Column("round", "int", "0: before any pseudo-label"), md.Column("labels_from", description="the model that labels (round 0)"),
    md.Column("offered", "int", "pseudo-labels offered"), md.Column("per_class", description="offered per class"),
    md.Column("validation_macro_f1", "float"), md.Column("kept", "bool", "false: the round's labels were discarded"),
]


@dg.asset(group_name=GROUP, partitions_def=DAILY, ins=WINDOW_INS)
def pseudo_labels(features: pl.DataFrame, gold_labels: pl.DataFrame, dataset: DatasetResource,
                  storage: StorageResource) -> dg.Output:
    """Self-training on the window: the production teacher (or one fitted on the gold labels) labels
    the unlabelled rows of training devices it is confident about, within per-class quotas, for at
    most ``max_rounds`` rounds, stopping when validation macro-F1 drops. Test rows are never touched."""
    config = dataset.load()
    if not config.labelling.self_training.enabled:
        return dg.Output(pl.DataFrame(schema=self_training.PSEUDO_SCHEMA), metadata={"rows": 0, "skipped": "disabled"})
    window = split_gold(features, gold_labels, config)
    result = self_training.self_train(window, config, storage.production_teacher())
    return dg.Output(result.labels, metadata={
        "rows": result.labels.height, "per_class": per_class(result.labels),
        "rounds": md.table(result.rounds, ROUND_COLUMNS), "stopped": result.stopped,
    })
