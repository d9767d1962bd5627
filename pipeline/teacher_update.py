"""Updating the production teacher when the world drifts, without forgetting what still holds.

Three ways, chosen by macro-F1 on the newest validation rows (those observed after the production
model was trained; half of their devices, the other half stops continued boosting early):
- ``refit``: keep the production trees, re-estimate their leaf values on the new rows
  (``Booster.refit`` with a decay rate): the cheapest, and often the best update;
- ``continue``: boost more trees on the new rows from the production model (``init_model``);
- ``window``: a full retrain on the sliding window, from scratch; with ``training.tuning.enabled``, the
  teacher of a search of its parameters (``pipeline.teacher_search``), warm-started from the
  production teacher's. Incremental updates keep the production parameters.
- ``recall``: for a confirmed change of the label rule, the teacher of an earlier production version
  that fits the rows since the change clearly better than the window retrain (``pipeline.recall``).
An incremental model must beat the production model on the new validation rows and lose at most
``forget_tolerance`` macro-F1 on the older ones (catastrophic forgetting); otherwise, and whenever
the policy asks for a full retrain, the window retrain is used. The test split is never looked at.
"""

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import polars as pl
from sklearn.metrics import f1_score

from pipeline import atomic, recall
from pipeline.dataset import DEVICE_ID, TIMESTAMP, DatasetConfig, TeacherSpec
from pipeline.encoding import label_codes, teacher_matrix
from pipeline.policy import FULL, Decision
from pipeline.sample_sizes import measured
from pipeline.teacher import Teacher, fit_teacher, production_params, train_teacher
from pipeline.teacher_search import TeacherSearch, search_teacher
from pipeline.training_set import SPLIT, TRAIN, VALIDATION

REFIT, CONTINUE, WINDOW, RECALL = "refit", "continue", "window", "recall"
UPDATE_FILE = "update.json"
Made = TypeVar("Made")


@dataclass
class Attempt:
    method: str
    seconds: float
    new_macro_f1: float | None = None
    older_macro_f1: float | None = None
    params: dict = field(default_factory=dict)
    """The hyper-parameters this method ran with (after the policy's adaptation)."""


@dataclass
class TeacherUpdate:
    teacher: Teacher
    method: str
    reason: str
    production: Attempt | None = None
    attempts: list[Attempt] = field(default_factory=list)
    search: TeacherSearch | None = None
    """The parameter search the window retrain's teacher came from, when tuning is enabled."""

    @property
    def seconds(self) -> float:
        """What this update cost: every method tried."""
        return round(sum(a.seconds for a in self.attempts), 3)

    @property
    def params(self) -> dict:
        """The effective hyper-parameters of the kept teacher: those of the method chosen, as run."""
        return next(a.params for a in reversed(self.attempts) if a.method == self.method)

    def to_json(self) -> dict:
        return {"method": self.method, "seconds": self.seconds, "reason": self.reason, "params": self.params,
                "production": vars(self.production) if self.production else None,
                "attempts": [vars(a) for a in self.attempts], **({"search": self.search.to_json()} if self.search else {})}

    def save(self, directory: Path) -> None:
        """The teacher's files and, beside them, this record of how it was made."""
        self.teacher.save(directory)
        atomic.write_text(directory / UPDATE_FILE, json.dumps(self.to_json(), indent=2))


def recalled_version(directory: Path) -> str | None:
    """The earlier version whose teacher the update in ``directory`` recalled, if it recalled one:
    its student goes with it (``student_model``). Distilled afresh on a window of the rule that just
    ended, the recalled teacher's student scored 0.457 macro-F1 where the teacher scored 0.867, and
    the quality floor blocked the fix (the recurring held-out stream)."""
    record = _update_record(directory)
    return record["params"].get("version") if record and record["method"] == RECALL else None


def trained_on_window(directory: Path) -> bool:
    """Whether the teacher in ``directory`` was boosted from scratch on the window, early-stopped on its
    validation rows: only such a teacher can be boosted again with them for its student's refit
    (``pipeline.student.refit_with_validation``), not an update of an older teacher or a recalled one."""
    record = _update_record(directory)
    return record is not None and record["method"] == WINDOW


def _update_record(directory: Path) -> dict | None:
    path = directory / UPDATE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def macro_f1(teacher: Teacher, frame: pl.DataFrame) -> float:
    classes = teacher.classes
    predicted = teacher.predict_proba(frame).argmax(axis=1)
    return float(f1_score(label_codes(frame, classes), predicted, labels=list(range(len(classes))), average="macro", zero_division=0))


def _after(frame: pl.DataFrame, day: dt.date) -> pl.Series:
    return frame[TIMESTAMP].dt.date() > day


def refit(production: Teacher, new: pl.DataFrame, decay: float) -> Teacher:
    booster = production.booster.refit(teacher_matrix(new, production.preprocessing), label_codes(new, production.classes),
                                       decay_rate=decay, weight=new["weight"].to_numpy())
    return Teacher(booster, production.preprocessing, production.classes)


def continued_spec(config: DatasetConfig, learning_rate: float, rounds: int, production: dict | None = None) -> TeacherSpec:
    """The configured teacher with the policy's learning rate and rounds, validated as the YAML is.
    ``production``: the searched parameters of a tuned production teacher, which continued boosting
    keeps, its learning rate scaled as the policy scaled the YAML's."""
    configured = config.training.teacher.model_dump()
    if production:
        learning_rate = round(learning_rate * production["learning_rate"] / configured["learning_rate"], 5)
    return TeacherSpec.model_validate({**configured, **(production or {}), "learning_rate": learning_rate, "rounds": rounds})


def kept_params(production: Teacher, config: DatasetConfig) -> dict | None:
    """With tuning enabled, the production teacher's searched parameters, which incremental updates
    keep; None (the YAML's) otherwise, as before tuning existed."""
    return production_params(production.booster) if config.training.tuning.enabled else None


def continue_training(production: Teacher, new: pl.DataFrame, validation: pl.DataFrame, config: DatasetConfig,
                      learning_rate: float, rounds: int) -> Teacher:
    spec = continued_spec(config, learning_rate, rounds, kept_params(production, config))
    return train_teacher(new, validation, production.preprocessing, production.classes, spec, config.training.seed,
                         init_model=production.booster)


def _measured(macro_f1: float | None) -> float:
    """An attempt's macro-F1 where it has been measured (an attempt is made before it is scored)."""
    if macro_f1 is None:
        raise ValueError("an attempt is compared before its macro-F1 is measured")
    return macro_f1


def _timed(method: str, params: dict, build: Callable[[], Made]) -> tuple[Made, Attempt]:
    started = time.perf_counter()
    made = build()
    return made, Attempt(method, round(time.perf_counter() - started, 3), params=params)


def update_teacher(training_set: pl.DataFrame, production: Teacher | None, trained_through: dt.date | None,
                   decision: Decision, config: DatasetConfig, tuning_storage: str | None = None,
                   past: dict[str, Teacher] | None = None) -> TeacherUpdate:
    """The teacher for this retrain. ``decision`` is the policy's (action, adapted hyper-parameters):
    a full retrain goes straight to the window; anything else (incremental, or a materialization a
    user asked for on a quiet day) tries the incremental updates first. ``trained_through`` is the
    newest day the production model learned from. ``tuning_storage``: the database of the teacher
    search's study (``pipeline.studies``; None: in memory), used when tuning is enabled. ``past``:
    earlier production versions' teachers, which a full retrain for a change of the label rule may
    recall."""
    window = _Window(training_set, production, config, tuning_storage)
    if decision.action != FULL and production is not None and trained_through is not None:
        train = training_set.filter(pl.col(SPLIT) == TRAIN)
        new = train.filter(_after(train, trained_through))
        minimum = measured(training_set, config).min_new_rows
        if new.height >= minimum:
            return _incremental(training_set, production, trained_through, new, decision, config, window)
        reason = f"only {new.height} new labelled training rows since {trained_through} (< {minimum})"
    elif production is None:
        reason = "no production teacher to update"
    else:
        reason = f"the policy asked for a full retrain: {decision.reason}"
    retrained = window.retrain(reason, [])
    return _recalled(retrained, training_set, decision, past or {}, config) or retrained


def _recalled(retrained: TeacherUpdate, training_set: pl.DataFrame, decision: Decision, past: dict[str, Teacher],
              config: DatasetConfig) -> TeacherUpdate | None:
    """The retrain with a past teacher in place of the retrained one, where ``pipeline.recall`` finds one."""
    if decision.change_date is None or not past or not config.training.recall.enabled:
        return None
    since = (pl.col(SPLIT) == VALIDATION) & (pl.col(TIMESTAMP).dt.date() >= decision.change_date)
    rows = training_set.filter(since)
    found, attempt = _timed(RECALL, {}, lambda: recall.best_past(retrained.teacher, past, rows, config.training.recall))
    if found is None:
        return None
    attempt.params, attempt.new_macro_f1 = {"version": found.version}, round(macro_f1(found.teacher, rows), 4)
    return TeacherUpdate(found.teacher, RECALL, f"{retrained.reason}; {found.reason}", retrained.production,
                         [*retrained.attempts, attempt], retrained.search)


def _halves(validation: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Two halves of the new validation rows, by device: continued boosting stops early on the
    first, and every method is judged on the second (judging on the stopping rows favours it)."""
    first = pl.col(DEVICE_ID).str.slice(-1).str.to_integer(base=16) % 2 == 0
    return validation.filter(first), validation.filter(~first)


@dataclass
class _Window:
    """The full retrain on the window, which every path may fall back to."""

    training_set: pl.DataFrame
    production: Teacher | None
    config: DatasetConfig
    tuning_storage: str | None

    def retrain(self, reason: str, attempts: list[Attempt], baseline: Attempt | None = None) -> TeacherUpdate:
        """With the YAML's parameters, or, with tuning enabled, those a search finds (warm-started
        from the production teacher's)."""
        config = self.config
        if not config.training.tuning.enabled:
            teacher, attempt = _timed(WINDOW, config.training.teacher.model_dump(mode="json"), lambda: fit_teacher(self.training_set, config))
            return TeacherUpdate(teacher, WINDOW, reason, baseline, [*attempts, attempt])
        warm = production_params(self.production.booster) if self.production else None
        search, attempt = _timed(WINDOW, {}, lambda: search_teacher(self.training_set, config, warm, self.tuning_storage))
        attempt.params = search.params
        return TeacherUpdate(search.teacher, WINDOW, f"{reason}; parameters searched: {search.reason}", baseline,
                             [*attempts, attempt], search)


def _incremental(training_set: pl.DataFrame, production: Teacher, trained_through: dt.date, new: pl.DataFrame,
                 decision: Decision, config: DatasetConfig, window: _Window) -> TeacherUpdate:
    validation = training_set.filter(pl.col(SPLIT) == VALIDATION)
    is_new = _after(validation, trained_through)
    old_val = validation.filter(~is_new)
    stopping, new_val = _halves(validation.filter(is_new))
    minimum = measured(training_set, config).min_validation_rows
    if new_val.height < minimum:
        return window.retrain(f"only {new_val.height} new validation rows to judge an update on (< {minimum})", [])
    params = decision.teacher
    continued = continued_spec(config, params["learning_rate"], params["rounds"], kept_params(production, config)).model_dump(mode="json")
    candidates = [
        _timed(REFIT, {"refit_decay": params["refit_decay"]}, lambda: refit(production, new, params["refit_decay"])),
        _timed(CONTINUE, continued, lambda: continue_training(production, new, stopping, config, params["learning_rate"], params["rounds"])),
    ]
    baseline = Attempt("production", 0.0, macro_f1(production, new_val), macro_f1(production, old_val) if old_val.height else None)
    for teacher, attempt in candidates:
        attempt.new_macro_f1 = macro_f1(teacher, new_val)
        attempt.older_macro_f1 = macro_f1(teacher, old_val) if old_val.height else None
    teacher, best = max(candidates, key=lambda c: _measured(c[1].new_macro_f1))
    attempts = [a for _, a in candidates]
    tolerance = config.feedback.policy.forget_tolerance
    if _measured(best.new_macro_f1) <= _measured(baseline.new_macro_f1):
        return window.retrain(f"{best.method} does not beat the production teacher on the new rows "
                       f"({best.new_macro_f1:.3f} vs {baseline.new_macro_f1:.3f})", attempts, baseline)
    if best.older_macro_f1 is not None and best.older_macro_f1 < _measured(baseline.older_macro_f1) - tolerance:
        return window.retrain(f"{best.method} forgot the older window: macro-F1 {best.older_macro_f1:.3f} "
                       f"vs the production teacher's {baseline.older_macro_f1:.3f} (tolerance {tolerance})", attempts, baseline)
    return TeacherUpdate(teacher, best.method, f"{best.method} is best on the new rows ({best.new_macro_f1:.3f}, production "
                         f"{baseline.new_macro_f1:.3f}) and keeps the older window", baseline, attempts)
