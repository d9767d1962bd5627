"""Weak supervision: labelling functions (domain rules) combined by a label model.

A labelling function votes one class on the rows it recognises and abstains elsewhere ("very low
received optical power means a fibre fault"). Functions come from the dataset YAML (conjunctions of
comparisons: data, never evaluated as code) or from Python (``module:attribute`` naming a list of
``LabellingFunction``). Snorkel's ``LabelModel`` combines the votes: it estimates each function's
accuracy from how the functions agree and disagree, with no labels, so a precise rule outvotes two
sloppy ones, which a majority vote cannot do. ``LFAnalysis`` gives coverage, overlap and conflict.
"""

import importlib
import operator
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from pipeline.dataset import LABEL, ROW_ID, DatasetConfig, LabellingRule

ABSTAIN = -1
CONFIDENCE = "confidence"
WEAK_SCHEMA = {ROW_ID: pl.String, LABEL: pl.String, CONFIDENCE: pl.Float64}
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne}


@dataclass(frozen=True)
class LabellingFunction:
    """Votes ``label`` on the rows where ``applies`` is true (a null counts as false)."""

    name: str
    label: str
    applies: Callable[[pl.DataFrame], pl.Series]


def from_rule(rule: LabellingRule) -> LabellingFunction:
    def applies(frame: pl.DataFrame) -> pl.Series:
        exprs = [_OPS[c.op](pl.col(c.feature), c.value) for c in rule.when]
        return frame.select(pl.all_horizontal(exprs).fill_null(False)).to_series()

    return LabellingFunction(rule.name, rule.label, applies)


def labelling_functions(config: DatasetConfig) -> list[LabellingFunction]:
    """The YAML rules, then each Python list named by ``module:attribute``."""
    spec = config.labelling.weak
    functions = [from_rule(rule) for rule in spec.rules]
    for reference in spec.python:
        module, _, attribute = reference.partition(":")
        found = getattr(importlib.import_module(module), attribute, None)
        if not isinstance(found, (list, tuple)) or not all(isinstance(f, LabellingFunction) for f in found):
            raise ValueError(f"labelling.weak.python: {reference!r} is not a list of LabellingFunction")
        functions.extend(found)
    for function in functions:
        if function.label not in config.classes:
            raise ValueError(f"labelling function {function.name!r}: label {function.label!r} is not one of {list(config.classes)}")
    names = [f.name for f in functions]
    if len(set(names)) != len(names):
        raise ValueError(f"labelling functions: duplicate names in {names}")
    return functions


def vote_matrix(frame: pl.DataFrame, functions: list[LabellingFunction], classes: tuple[str, ...]) -> np.ndarray:
    """Rows x functions: the class code each function votes, or ABSTAIN."""
    votes = np.full((frame.height, len(functions)), ABSTAIN, dtype=np.int64)
    for j, function in enumerate(functions):
        votes[function.applies(frame).to_numpy(), j] = classes.index(function.label)
    return votes


def class_balance(gold: pl.DataFrame, classes: tuple[str, ...]) -> np.ndarray | None:
    """Each class's share among ``gold`` labels (add-one smoothed: no class is impossible), the label
    model's prior; None without labels."""
    if gold.height == 0:
        return None
    counts = np.array([(gold[LABEL] == c).sum() for c in classes], dtype=float) + 1.0
    return counts / counts.sum()


@dataclass
class WeakLabels:
    labels: pl.DataFrame
    """``row_id``, ``label``, ``confidence``: rows whose combined label is confident enough."""
    functions: dict[str, dict]
    """Per function: label, coverage, overlap, conflict and the label model's estimated accuracy
    (None for a function that voted on no row: there is nothing to estimate it from)."""
    covered: int
    """Rows with at least one vote."""


def weak_labels(frame: pl.DataFrame, config: DatasetConfig, class_balance: np.ndarray | None = None,
                seed: int = 0) -> WeakLabels:
    """Votes of every labelling function on ``frame``, combined by the label model. ``class_balance``
    (the share of each class, e.g. among gold labels) is the label model's prior; without it the
    classes are taken as equally likely, which with one rare-class rule underrates the common class."""
    functions = labelling_functions(config)
    classes = config.classes
    empty = pl.DataFrame(schema=WEAK_SCHEMA)
    if not functions or frame.height == 0:
        return WeakLabels(empty, {}, 0)
    votes = vote_matrix(frame, functions, classes)
    covered = (votes != ABSTAIN).any(axis=1)
    probabilities, accuracy = _label_model(votes, len(classes), class_balance, seed)
    confidence = probabilities.max(axis=1)
    keep = covered & (confidence >= config.labelling.weak.min_confidence)
    labels = pl.DataFrame({
        ROW_ID: frame[ROW_ID].filter(pl.Series(keep)),
        LABEL: np.asarray(classes)[probabilities.argmax(axis=1)[keep]],
        CONFIDENCE: confidence[keep],
    }, schema=empty.schema)
    return WeakLabels(labels, _analysis(votes, functions, accuracy), int(covered.sum()))


def _label_model(votes: np.ndarray, n_classes: int, class_balance: np.ndarray | None,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities per row and each function's estimated accuracy (snorkel's LabelModel; NaN
    for a function that never voted, which snorkel would report as a perfect 1.0)."""
    from snorkel.labeling.model import LabelModel  # imports torch and tensorboard: only when used

    model = LabelModel(cardinality=n_classes, verbose=False)
    model.fit(votes, class_balance=class_balance, n_epochs=500, seed=seed, progress_bar=False)
    covered = (votes != ABSTAIN).any(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):  # snorkel divides by each function's coverage
        accuracy = np.where(covered, model.get_weights(), np.nan)
    return model.predict_proba(votes), accuracy


def _analysis(votes: np.ndarray, functions: list[LabellingFunction], accuracy: np.ndarray) -> dict[str, dict]:
    from snorkel.labeling import LFAnalysis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scipy's dtype notice on snorkel's internal diags() call
        summary = LFAnalysis(votes).lf_summary()
    return {
        f.name: {"label": f.label, "coverage": round(float(summary["Coverage"].iloc[j]), 4),
                 "overlap": round(float(summary["Overlaps"].iloc[j]), 4),
                 "conflict": round(float(summary["Conflicts"].iloc[j]), 4),
                 "estimated_accuracy": None if np.isnan(accuracy[j]) else round(float(accuracy[j]), 4)}
        for j, f in enumerate(functions)
    }
