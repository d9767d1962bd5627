"""Active learning: spend a person's labelling budget on the rows a model learns most from.

Uncertainty sampling asks about the rows the current teacher is least sure of: highest entropy of
its predicted distribution, or smallest margin between its two likeliest classes. Query by
committee trains a few deliberately different LightGBM models (bootstrap samples, different tree
sizes and feature subsets) on the gold labels and asks about the rows they disagree on most:
entropy of their votes, or mean KL divergence of each member from the consensus. Uncertainty
needs a model; the committee needs labels. When neither exists the queue falls back to a random
sample, and says so.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import polars as pl

from pipeline.dataset import ROW_ID, ActiveLearningSpec, DatasetConfig
from pipeline.encoding import fit_preprocessing, label_codes, teacher_matrix
from pipeline.features import model_feature_names
from pipeline.teacher import Teacher

SCORE = "score"
MIN_COMMITTEE_ROWS = 50
"""Fewer gold training rows than this cannot train a committee worth listening to."""
_EPS = 1e-12


def entropy(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(probabilities, _EPS, 1.0)
    return -(p * np.log(p)).sum(axis=1)


def margin_uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """1 minus the gap between the two likeliest classes: higher is less sure."""
    top = np.sort(probabilities, axis=1)
    return 1.0 - (top[:, -1] - top[:, -2])


def vote_entropy(members: Sequence[np.ndarray]) -> np.ndarray:
    """Entropy of the members' hard votes, per row."""
    n_classes = members[0].shape[1]
    votes = np.stack([m.argmax(axis=1) for m in members], axis=1)
    shares = np.stack([(votes == k).mean(axis=1) for k in range(n_classes)], axis=1)
    return entropy(shares)


def mean_kl(members: Sequence[np.ndarray]) -> np.ndarray:
    """Mean KL divergence of each member's distribution from the committee's mean, per row."""
    consensus = np.clip(np.mean(members, axis=0), _EPS, 1.0)
    return np.mean([(np.clip(m, _EPS, 1.0) * np.log(np.clip(m, _EPS, 1.0) / consensus)).sum(axis=1) for m in members], axis=0)


def train_committee(train: pl.DataFrame, config: DatasetConfig, size: int) -> list[Teacher]:
    """``size`` LightGBM models made to differ: each on its own bootstrap sample, with its own tree
    size and feature subset; one preprocessing, fitted on all of ``train``."""
    numeric, categorical = model_feature_names(config)
    preprocessing = fit_preprocessing(train, numeric, categorical)
    x, y = teacher_matrix(train, preprocessing), label_codes(train, config.classes)
    n_numeric = len(preprocessing["numeric"])
    categorical_idx = list(range(n_numeric, n_numeric + len(preprocessing["categorical"])))
    members = []
    for i in range(size):
        rng = np.random.default_rng(config.training.seed + i)
        sample = rng.integers(0, len(y), size=len(y))
        params = {"objective": "multiclass", "num_class": len(config.classes), "learning_rate": 0.1,
                  "num_leaves": (7, 15, 31)[i % 3], "feature_fraction": 0.6 + 0.1 * (i % 4), "min_data_in_leaf": 10,
                  "seed": config.training.seed + i, "deterministic": True, "num_threads": 1, "verbose": -1}
        data = lgb.Dataset(x[sample], y[sample], categorical_feature=categorical_idx, free_raw_data=False)
        members.append(Teacher(lgb.train(params, data, num_boost_round=80), preprocessing, config.classes))
    return members


@dataclass
class QueueScores:
    scores: np.ndarray
    method: str
    """What scored the rows: the strategy, or the fallback used and why."""


def score_candidates(candidates: pl.DataFrame, labelled_train: pl.DataFrame, teacher: Teacher | None,
                     config: DatasetConfig, seed: int) -> QueueScores:
    """How much each candidate row is worth asking about, by the configured strategy."""
    spec: ActiveLearningSpec = config.labelling.active
    enough_labels = labelled_train.height >= MIN_COMMITTEE_ROWS and labelled_train["label"].n_unique() >= 2
    if spec.strategy == "committee" and enough_labels:
        members = [m.predict_proba(candidates) for m in train_committee(labelled_train, config, spec.committee_size)]
        disagreement = vote_entropy(members) if spec.disagreement == "vote_entropy" else mean_kl(members)
        # vote entropy ties often (few members): the committee's mean entropy breaks them
        return QueueScores(disagreement + 1e-3 * entropy(np.mean(members, axis=0)), f"committee ({spec.disagreement})")
    if spec.strategy in ("entropy", "margin") and teacher is not None:
        probabilities = teacher.predict_proba(candidates)
        score = entropy(probabilities) if spec.strategy == "entropy" else margin_uncertainty(probabilities)
        return QueueScores(score, f"{spec.strategy} (production teacher)")
    reason = "random" if spec.strategy == "random" else (
        f"random: {spec.strategy} needs " + ("a production teacher" if spec.strategy != "committee"
                                             else f"at least {MIN_COMMITTEE_ROWS} gold training rows of 2 classes"))
    return QueueScores(np.random.default_rng(seed).uniform(size=candidates.height), reason)


def select(candidates: pl.DataFrame, scores: np.ndarray, budget: int) -> pl.DataFrame:
    """The ``budget`` highest-scoring rows, with their score (ties broken by row id: reproducible)."""
    scored = candidates.with_columns(pl.Series(SCORE, scores, dtype=pl.Float64))
    return scored.sort([SCORE, ROW_ID], descending=[True, False]).head(budget)
