"""Self-training: the teacher labels the unlabelled rows it is sure of, and learns from them.

Each round predicts the unlabelled rows of training devices, keeps those above the confidence
threshold, at most ``class_quota`` per gold training label of each class (a confident majority
class would otherwise swamp the rare ones), retrains on gold plus pseudo-labels and checks the
validation macro-F1: if it dropped, the round's labels are thrown away and the rounds stop. The
first round's predictions come from the current (production) teacher when there is one; every
round is judged against a model trained on the gold labels alone. Rows of validation and test
devices are never pseudo-labelled, and the test split plays no part.
"""

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from pipeline.dataset import LABEL, ROW_ID, DatasetConfig
from pipeline.encoding import fit_preprocessing
from pipeline.features import model_feature_names
from pipeline.teacher import Teacher, train_teacher
from pipeline.teacher_update import macro_f1
from pipeline.training_set import (
    PROVENANCE,
    PSEUDO,
    SPLIT,
    TRAIN,
    UNLABELLED,
    VALIDATION,
    WEIGHT,
    on_training_device,
    within_quota,
)

CONFIDENCE, ROUND = "confidence", "round"
PSEUDO_SCHEMA = {ROW_ID: pl.String, LABEL: pl.String, CONFIDENCE: pl.Float64, ROUND: pl.Int64}


@dataclass
class SelfTraining:
    labels: pl.DataFrame
    """``row_id``, ``label``, ``confidence`` and the ``round`` that added it."""
    rounds: list[dict] = field(default_factory=list)
    """Per round: pseudo-labels offered and per class, validation macro-F1, kept or not."""
    stopped: str = ""


def self_train(frame: pl.DataFrame, config: DatasetConfig, teacher: Teacher | None) -> SelfTraining:
    """Pseudo-labels for the unlabelled training-device rows of ``frame`` (a gold-split window)."""
    spec = config.labelling.self_training
    train = frame.filter(pl.col(SPLIT) == TRAIN)
    validation = frame.filter(pl.col(SPLIT) == VALIDATION)
    pool = frame.filter((pl.col(SPLIT) == UNLABELLED) & on_training_device(frame, config))
    numeric, categorical = model_feature_names(config)
    preprocessing = fit_preprocessing(train, numeric, categorical)
    gold_only = _fit(train, validation, preprocessing, config)
    model, best = teacher or gold_only, macro_f1(gold_only, validation)
    result = SelfTraining(pl.DataFrame(schema=PSEUDO_SCHEMA), [{ROUND: 0, "validation_macro_f1": round(best, 4),
                                                                "labels_from": "production teacher" if teacher else "gold only"}])
    quotas = _quotas(train, config)
    for number in range(1, spec.max_rounds + 1):
        offered = _confident(model, pool.filter(~pl.col(ROW_ID).is_in(result.labels[ROW_ID].implode())), quotas, spec.threshold, number)
        if offered.height == 0:
            result.stopped = f"round {number}: no unlabelled row reached confidence {spec.threshold}"
            return result
        labels = pl.concat([result.labels, offered])
        candidate = _fit(pl.concat([train, _as_rows(pool, labels, spec.weight)], how="vertical_relaxed"), validation, preprocessing, config)
        score = macro_f1(candidate, validation)
        per_class = dict(offered.group_by(LABEL).len().sort(LABEL).iter_rows())
        kept = not (spec.stop_on_drop and score < best)
        result.rounds.append({ROUND: number, "offered": offered.height, "per_class": per_class,
                              "validation_macro_f1": round(score, 4), "kept": kept})
        if not kept:
            result.stopped = f"round {number}: validation macro-F1 dropped to {score:.4f} from {best:.4f}; its labels discarded"
            return result
        result.labels, model, best = labels, candidate, max(best, score)
    result.stopped = f"all {spec.max_rounds} rounds kept"
    return result


def _quotas(train: pl.DataFrame, config: DatasetConfig) -> dict[str, int] | None:
    ratio = config.labelling.self_training.class_quota
    counts = dict(train.group_by(LABEL).len().iter_rows())
    return None if ratio is None else {c: math.ceil(ratio * counts.get(c, 0)) for c in config.classes}


def _confident(model: Teacher, pool: pl.DataFrame, quotas: dict[str, int] | None, threshold: float, number: int) -> pl.DataFrame:
    """Rows predicted with at least ``threshold``, the most confident first, within each class's quota."""
    if pool.height == 0:
        return pl.DataFrame(schema=PSEUDO_SCHEMA)
    probabilities = model.predict_proba(pool)
    scored = pl.DataFrame({
        ROW_ID: pool[ROW_ID], LABEL: np.asarray(model.classes)[probabilities.argmax(axis=1)],
        CONFIDENCE: probabilities.max(axis=1), ROUND: number,
    }, schema=PSEUDO_SCHEMA).filter(pl.col(CONFIDENCE) >= threshold)
    return within_quota(scored, quotas)


def _as_rows(pool: pl.DataFrame, labels: pl.DataFrame, weight: float) -> pl.DataFrame:
    """The pool's feature rows carrying their pseudo-label, as training rows of ``weight``."""
    return pool.drop(LABEL).join(labels.select(ROW_ID, LABEL), on=ROW_ID).with_columns(
        pl.lit(TRAIN).alias(SPLIT), pl.lit(weight).alias(WEIGHT), pl.lit(PSEUDO).alias(PROVENANCE)).select(pool.columns)


def _fit(train: pl.DataFrame, validation: pl.DataFrame, preprocessing: dict, config: DatasetConfig) -> Teacher:
    return train_teacher(train, validation, preprocessing, config.classes, config.training.teacher, config.training.seed)
