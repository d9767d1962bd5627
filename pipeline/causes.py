"""The cause of a drift or a drop: which inputs and which slices of the fleet.

- Attribution drift: the teacher's own feature contributions (LightGBM ``pred_contrib``, SHAP
  values of the trees, no new dependency) on a sample of the reference rows and of the day's, and
  per feature how far the distribution of its contributions moved. A feature whose contributions
  moved most is the one whose drift the model feels; a feature that drifted but the model ignores does not rank. The
  teacher stands in for the student it taught: the student has no cheap exact attribution, and
  both learned the same rule from the same rows.
- Loss slices, where labels came back: per site and per value of each categorical input, the
  errors beyond those the reference accuracy expects (``excess errors``), largest first: where the
  loss increase sits.

``pred_contrib`` costs about a millisecond a row, so the reference's side is computed once, when the
version is registered (``reference_attribution.json``: the sample's contributions), and only the
day's sample each day.

The rows join the drift report (kinds ``attribution`` and ``loss slice``); ``top_causes`` says it in
one sentence and a table.
"""

import json
from pathlib import Path

import numpy as np
import polars as pl
from scipy.stats import wasserstein_distance

from pipeline import atomic
from pipeline.dataset import LABEL, ROW_ID, SITE, EstimateSpec
from pipeline.drift import ATTRIBUTION, LOSS_SLICE, DriftInputs, report_rows
from pipeline.encoding import teacher_matrix
from pipeline.teacher import Teacher

REFERENCE_ATTRIBUTION_FILE = "reference_attribution.json"


def contributions(teacher: Teacher, frame: pl.DataFrame) -> np.ndarray:
    """Per row, class and model input (the teacher's feature order): the input's contribution to the
    class score (LightGBM ``pred_contrib``, the bias term dropped). Shape (rows, classes, inputs)."""
    n_features, n_classes = len(teacher.preprocessing["feature_order"]), len(teacher.classes)
    if not frame.height:
        return np.zeros((0, n_classes, n_features))
    values = np.asarray(teacher.booster.predict(teacher_matrix(frame, teacher.preprocessing), pred_contrib=True))
    return values.reshape(frame.height, n_classes, n_features + 1)[:, :, :n_features]


def mean_abs(contributions: np.ndarray) -> np.ndarray:
    """Per input: mean over rows of |contribution|, summed over classes (how much the model leans on it)."""
    return np.abs(contributions).sum(axis=1).mean(axis=0) if len(contributions) else np.zeros(contributions.shape[2])


def _sample(frame: pl.DataFrame, rows: int, seed: int) -> pl.DataFrame:
    """Drawn in row-id order: a join upstream may hand the same rows over in another order, and the
    same rows must give the same sample, so that a report repeats (a day's ranking once flipped with it)."""
    if frame.height <= rows:
        return frame
    return (frame.sort(ROW_ID) if ROW_ID in frame.columns else frame).sample(rows, seed=seed)


def reference_contributions(teacher: Teacher, reference: pl.DataFrame, rows: int, seed: int = 0) -> np.ndarray:
    """The contributions of a sample of the reference rows (rows, classes, inputs)."""
    return contributions(teacher, _sample(reference, rows, seed))


def save_reference_contributions(values: np.ndarray, teacher: Teacher, path: Path) -> None:
    stored = {"features": teacher.preprocessing["feature_order"], "contributions": values.tolist()}
    atomic.write_text(path, json.dumps(stored))


def load_reference_contributions(teacher: Teacher, path: Path) -> np.ndarray | None:
    """The stored reference side, in the teacher's feature order; None for a version saved without it
    (or with the per-input means only, as versions before the per-row sample were)."""
    if not path.exists():
        return None
    stored = json.loads(path.read_text(encoding="utf-8"))
    if "contributions" not in stored:
        return None
    values = np.array(stored["contributions"], dtype=np.float64).reshape(-1, len(teacher.classes), len(stored["features"]))
    return values[:, :, [stored["features"].index(name) for name in teacher.preprocessing["feature_order"]]]


def _distance(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per input: how far its contributions moved, as distributions (Wasserstein-1 per class, summed).
    A change of means would miss a shifted input whose rows moved both ways (some contributions up,
    others down) and would credit inputs that merely interact with it."""
    return np.array([sum(wasserstein_distance(before[:, k, f], after[:, k, f]) for k in range(before.shape[1]))
                     for f in range(before.shape[2])])


def excess_distance(before: np.ndarray, after: np.ndarray, seed: int, permutations: int = 20) -> np.ndarray:
    """Per input: the distance beyond what two samples of one distribution show (its mean over random
    splits of the pooled rows), floored at 0. Inputs the model leans on most have the widest
    contributions and so the largest distances from sampling alone; without the correction they
    outrank a smaller input that truly moved (38 of 40 scenarios ranked right with it, 33 without:
    ``benchmarks/cause_ranking.py``)."""
    if not len(before) or not len(after):
        return np.zeros(before.shape[2])
    pooled, rng = np.concatenate([before, after]), np.random.default_rng(seed)
    null = np.mean([_distance(pooled[order[:len(before)]], pooled[order[len(before):]])
                    for order in (rng.permutation(len(pooled)) for _ in range(permutations))], axis=0)
    return np.maximum(_distance(before, after) - null, 0.0)


def attribution_drift(teacher: Teacher, before: np.ndarray, current: pl.DataFrame, rows: int, seed: int = 0) -> pl.DataFrame:
    """Per input: mean |contribution| on the reference sample (``before``) and on a sample of the day,
    the change of that mean, and how far the contributions moved beyond sampling noise (``share``: as a
    share of the reference's total attribution, comparable across days); ranked by ``share``."""
    after = contributions(teacher, _sample(current, rows, seed))
    reference_mean, current_mean = mean_abs(before), mean_abs(after)
    total = max(float(reference_mean.sum()), 1e-12)
    return pl.DataFrame({
        "feature": teacher.preprocessing["feature_order"], "reference": reference_mean, "current": current_mean,
        "change": current_mean - reference_mean, "share": excess_distance(before, after, seed) / total,
    }).sort("share", descending=True)


def loss_slices(fresh: pl.DataFrame, correct: np.ndarray, reference_accuracy: float, columns: list[str]) -> pl.DataFrame:
    """Per value of each slicing column: rows, accuracy, and errors beyond the reference's rate."""
    scored = fresh.select([pl.col(c).cast(pl.String).fill_null("<missing>") for c in columns]).with_columns(pl.Series("ok", correct))
    frames = [
        scored.group_by(column).agg(pl.len().alias("rows"), pl.col("ok").mean().alias("accuracy"), (~pl.col("ok")).sum().alias("errors"))
        .select((pl.lit(f"{column}=") + pl.col(column)).alias("slice"), "rows", "accuracy", "errors")
        for column in columns
    ]
    table = pl.concat(frames) if frames else pl.DataFrame(schema={"slice": pl.String, "rows": pl.UInt32, "accuracy": pl.Float64, "errors": pl.UInt32})
    excess = pl.col("errors").cast(pl.Float64) - pl.col("rows").cast(pl.Float64) * (1 - reference_accuracy)
    return table.with_columns(excess.alias("excess_errors")).sort("excess_errors", descending=True)


def cause_report(teacher: Teacher, inputs: DriftInputs, predicted: np.ndarray, categorical: list[str],
                 spec: EstimateSpec, seed: int = 0, before: np.ndarray | None = None) -> pl.DataFrame:
    """The report rows of the causes: attribution drift of every input (against ``before``, the
    stored reference side, else computed from ``inputs.reference``), and, where labels came back
    (``predicted``: the production model's classes for ``inputs.fresh``), the slices that lost most."""
    if before is None:
        before = reference_contributions(teacher, inputs.reference, spec.contribution_rows, seed)
    attribution = attribution_drift(teacher, before, inputs.current, spec.contribution_rows, seed)
    rows = [{"test": r["feature"], "kind": ATTRIBUTION, "statistic": r["change"], "effect": r["share"],
             "reference_value": r["reference"], "current_value": r["current"], "tested": True, "drifted": False,
             "n_reference": min(inputs.reference.height, spec.contribution_rows), "n_current": min(inputs.current.height, spec.contribution_rows)}
            for r in attribution.iter_rows(named=True)]
    if inputs.fresh.height:
        columns = [c for c in (SITE, *categorical) if c in inputs.fresh.columns]
        correct = predicted == inputs.fresh[LABEL].to_numpy()
        rows += [{"test": r["slice"], "kind": LOSS_SLICE, "statistic": r["accuracy"] - inputs.reference_accuracy, "effect": r["excess_errors"],
                  "reference_value": inputs.reference_accuracy, "current_value": r["accuracy"], "tested": True,
                  "drifted": False, "n_reference": None, "n_current": r["rows"]}
                 for r in loss_slices(inputs.fresh, correct, inputs.reference_accuracy, columns).iter_rows(named=True)
                 if r["excess_errors"] > 0]
    return report_rows(rows)


def top_causes(report: pl.DataFrame, n: int) -> tuple[list[str], str, str]:
    """The ``n`` inputs whose contribution moved most and the ``n`` slices with most excess errors:
    (names, one sentence, a markdown table)."""
    attribution = report.filter(pl.col("kind") == ATTRIBUTION).sort("effect", descending=True).head(n)
    slices = report.filter(pl.col("kind") == LOSS_SLICE).sort("effect", descending=True).head(n)
    if not attribution.height:
        return [], "no causes computed", ""
    names = attribution["test"].to_list()
    moves = [f"{r['test']} ({r['effect']:.0%} of the reference attribution, {'up' if r['statistic'] > 0 else 'down'})"
             for r in attribution.iter_rows(named=True)]
    sentence = "The model's attribution moved most on " + ", ".join(moves)
    if slices.height:
        sentence += "; on returned labels the loss increase sits in " + ", ".join(
            f"{r['test']} ({r['effect']:.0f} excess errors of {r['n_current']})" for r in slices.iter_rows(named=True))
    lines = ["| cause | kind | reference | current | change | share / excess errors |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['test']} | {r['kind']} | {r['reference_value']:.4g} | {r['current_value']:.4g} | "
              f"{r['statistic']:+.4g} | {r['effect']:.3g} |" for r in pl.concat([attribution, slices]).iter_rows(named=True)]
    return names, sentence + ".", "\n".join(lines)
