"""The training window: how many of the newest days a model learns from, and how much older rows weigh.

A fixed window is wrong twice: on a stationary stream a longer one learns more, and after a change
of the label rule its older days teach the old rule. So the window is chosen, not fixed. Candidates
(the newest 1, 2, 4, 7, 14 ... days of the training set, and the whole set with older days weighted
down) are each fitted with the teacher's settings on their training rows and judged on the newest
labelled validation rows, pooled back from the newest day until there are ``min_selection_rows``
(never before a known change: after a change only the new world judges). Among the candidates within
one standard error of the best accuracy the one that learns from the most rows wins, so noise does
not shorten the window of a stationary stream.

The chosen window then applies to everything downstream: labelled rows outside it (train,
validation and test alike) are dropped, so the teacher, the student, the evaluation and the gates all
see the world the model is meant for; unlabelled rows stay for distillation, whose soft labels come
from the new teacher. The test split is never looked at for the choice.
"""

import datetime as dt
import math
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from pipeline.dataset import LABEL, TIMESTAMP, DatasetConfig, RecencySpec
from pipeline.encoding import fit_preprocessing
from pipeline.features import model_feature_names
from pipeline.teacher import train_teacher
from pipeline.training_set import SPLIT, TRAIN, UNLABELLED, VALIDATION, WEIGHT

_DAY = "__day"


@dataclass(frozen=True)
class Candidate:
    days: int
    decay: float
    """Weight factor per day of age of a training row (1.0: every day weighs the same)."""

    @property
    def name(self) -> str:
        return f"{self.days}d" + ("" if self.decay == 1.0 else f" x{self.decay}/day")


@dataclass(frozen=True)
class WindowChoice:
    days: int
    decay: float
    newest_day: dt.date
    reason: str
    scores: tuple[dict, ...] = ()
    """Each candidate: name, days, decay, train rows, accuracy on the selection rows."""

    @property
    def first_day(self) -> dt.date:
        return self.newest_day - dt.timedelta(days=self.days - 1)

    def to_json(self) -> dict:
        return {**asdict(self), "newest_day": self.newest_day.isoformat(), "first_day": self.first_day.isoformat(),
                "scores": list(self.scores)}


def whole_window(training_set: pl.DataFrame, reason: str) -> WindowChoice:
    days = _days(training_set)
    return WindowChoice((days[-1] - days[0]).days + 1, 1.0, days[-1], reason)


def _unjudged(training_set: pl.DataFrame, validation_rows: int, spec: RecencySpec, change_day: dt.date | None) -> WindowChoice:
    """Too few validation rows to judge the candidates on: the whole window, but after a change of the
    label rule with older days weighted down (the first of ``decays``), since the premise of a fix is
    that the old rows teach a rule that no longer holds. Unweighted, the first retrains after a change
    on a 48-row-a-day stream learned from 14 days of which 1-3 were of the new rule."""
    why = f"only {validation_rows} validation rows to choose a window on"
    if change_day is None or not spec.decays:
        return whole_window(training_set, f"{why}: the whole window")
    days = _days(training_set)
    decay = spec.decays[0]
    return WindowChoice((days[-1] - days[0]).days + 1, decay, days[-1],
                        f"{why} since the change on {change_day}: the whole window, older days weighted down by {decay} a day")


def apply(training_set: pl.DataFrame, choice: WindowChoice) -> pl.DataFrame:
    """The rows a model of this window learns from and is judged on: labelled rows of the window's
    days, and every unlabelled row. Training and validation rows are weighted by their age: early
    stopping watches the validation rows, and the refits learn from them
    (``pipeline.student.refit_with_validation``), where an old day's validation rows at full weight
    put back the old rule the decay weighed down (a 48-row-a-day stream the day after its change: 84
    validation rows of the 12 days before it at full weight, against 112.6 of weight in all 476
    training rows). The test split keeps weight 1: it is only scored."""
    day = pl.col(TIMESTAMP).dt.date()
    age = (pl.lit(choice.newest_day) - day).dt.total_days()
    kept = training_set.filter((pl.col(SPLIT) == UNLABELLED) | (day >= choice.first_day))
    if choice.decay == 1.0:
        return kept
    factor = pl.lit(choice.decay).pow(age)
    learned = pl.col(SPLIT).is_in([TRAIN, VALIDATION])
    return kept.with_columns(pl.when(learned).then(pl.col(WEIGHT) * factor).otherwise(pl.col(WEIGHT)).alias(WEIGHT))


def choose_window(training_set: pl.DataFrame, config: DatasetConfig, change_day: dt.date | None = None) -> WindowChoice:
    """The window with the best accuracy on the newest validation rows (see the module's docstring).
    ``change_day``: the first day of a known change of the label rule; the rows since then judge,
    and a candidate that starts on that day is always among those tried."""
    spec = config.training.recency
    days = _days(training_set)
    if not spec.enabled:
        return whole_window(training_set, "training.recency.enabled is false: the whole window")
    newest = days[-1]
    selection = _selection_rows(training_set, spec, change_day)
    if selection.height < spec.min_judging_rows:
        return _unjudged(training_set, selection.height, spec, change_day)
    scores = []
    for candidate in _candidates(days, spec, change_day):
        rows = apply(training_set, WindowChoice(candidate.days, candidate.decay, newest, ""))
        train = rows.filter(pl.col(SPLIT) == TRAIN)
        if train.height < spec.min_train_rows or train[LABEL].n_unique() < 2:
            continue
        scores.append({"name": candidate.name, "days": candidate.days, "decay": candidate.decay,
                       "train_rows": train.height, "weight": round(float(train[WEIGHT].sum()), 1),
                       "accuracy": round(_accuracy(train, selection, config), 4)})
    if not scores:
        return whole_window(training_set, "no candidate window had enough training rows: the whole window")
    return _pick(scores, selection.height, newest, change_day)


def _days(training_set: pl.DataFrame) -> list[dt.date]:
    labelled = training_set.filter(pl.col(SPLIT) != UNLABELLED)
    return sorted(labelled[TIMESTAMP].dt.date().unique())


def _selection_rows(training_set: pl.DataFrame, spec: RecencySpec, change_day: dt.date | None) -> pl.DataFrame:
    """Validation rows of the newest days, pooled back until there are enough, never before a change."""
    validation = training_set.filter(pl.col(SPLIT) == VALIDATION).with_columns(pl.col(TIMESTAMP).dt.date().alias(_DAY))
    if change_day is not None:
        validation = validation.filter(pl.col(_DAY) >= change_day)
    per_day = validation.group_by(_DAY).len().sort(_DAY, descending=True)
    cumulative = per_day["len"].cum_sum()
    enough = int((cumulative < spec.min_selection_rows).sum()) + 1
    chosen = per_day[_DAY].head(enough)
    return validation.filter(pl.col(_DAY).is_in(chosen.implode())).drop(_DAY)


def _candidates(days: list[dt.date], spec: RecencySpec, change_day: dt.date | None) -> list[Candidate]:
    span = (days[-1] - days[0]).days + 1
    lengths = {d for d in spec.windows if d < span} | {span}
    if change_day is not None and days[0] <= change_day <= days[-1]:
        lengths.add((days[-1] - change_day).days + 1)
    candidates = [Candidate(d, 1.0) for d in sorted(lengths)]
    return candidates + [Candidate(span, decay) for decay in spec.decays]


def _accuracy(train: pl.DataFrame, selection: pl.DataFrame, config: DatasetConfig) -> float:
    numeric, categorical = model_feature_names(config)
    preprocessing = fit_preprocessing(train, numeric, categorical)
    teacher = train_teacher(train, selection, preprocessing, config.classes, config.training.teacher, config.training.seed)
    predicted = np.asarray(config.classes)[teacher.predict_proba(selection).argmax(axis=1)]
    return float(np.mean(predicted == selection[LABEL].to_numpy()))


def _pick(scores: list[dict], n: int, newest: dt.date, change_day: dt.date | None) -> WindowChoice:
    best = max(s["accuracy"] for s in scores)
    tolerance = math.sqrt(max(best * (1 - best), 1 / n) / n)
    near = [s for s in scores if s["accuracy"] >= best - tolerance]
    chosen = max(near, key=lambda s: (s["weight"], s["days"]))
    since = f" since the change on {change_day}" if change_day else ""
    reason = (f"{chosen['name']}: accuracy {chosen['accuracy']:.3f} on {n} newest validation rows{since}, within one "
              f"standard error ({tolerance:.3f}) of the best ({best:.3f}) and learning from the most rows "
              f"({chosen['train_rows']}) of {len(scores)} candidates")
    return WindowChoice(chosen["days"], chosen["decay"], newest, reason, tuple(scores))
