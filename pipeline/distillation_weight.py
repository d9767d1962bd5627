"""How much the student learns from the teacher and how much from the labels: a choice each stream
makes on evidence, and keeps until the evidence turns.

The distillation loss weighs the teacher's softened scores by ``alpha`` and the rows' labels by
``1 - alpha`` (``pipeline.student``). The configured 0.9 suits a stream whose structure trees learn
better than a small MLP, as the simulator's fault thresholds: the student comes within a point of its
LightGBM teacher only by imitating it, and on unlabelled rows only the teacher speaks. Where the label
rule is smooth in the inputs (the generated streams' linear scores), the MLP learns more from the
labels than the teacher can teach it. Measured on finished backtests (``benchmarks/RESULTS.md``):
on a 3-class stream the day after its label rule changed, students of alpha 0.9 and 0 served 0.938
and 0.952 (their teacher 0.914); on the simulator, alpha 0 cost 1-3 points.

So a full retrain (and a first model) distils one more student for each other alpha (the configured
one and ``alpha_alternatives``) and compares it with the incumbent, the production student's alpha
(the configured one before there is a production model), on the validation rows. A challenger takes
over only when it is right on significantly more of the rows the two disagree on (a paired sign test
at ``alpha_switch_z``): validation is a few hundred rows after a change, where the two students
often score the same, and there the stream's earlier, better-supported choice stands instead of a
coin flip. Incremental updates keep the incumbent without judging. The chosen student is then fitted
again with its validation rows (``pipeline.student.refit_with_validation``), from a teacher boosted again
with them where the teacher was trained on the window.
"""

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from pipeline.dataset import DatasetConfig, StudentSpec
from pipeline.encoding import label_codes, student_matrix
from pipeline.student import Student, Weights, fit_student, refit_with_validation
from pipeline.teacher import Teacher
from pipeline.training_set import SPLIT, VALIDATION


@dataclass(frozen=True)
class _Contest:
    alpha: float
    student: Student
    correct: np.ndarray


def incumbent_alpha(spec: StudentSpec, production: Student | None) -> float:
    """The production student's alpha where it recorded one, else the configured one."""
    recorded = production.hyperparameters.get("alpha") if production is not None else None
    return spec.alpha if recorded is None else float(recorded)


def distil(training_set: pl.DataFrame, teacher: Teacher, config: DatasetConfig, spec: StudentSpec, incumbent: float,
           judge: bool, start: tuple[str, Weights] | None = None, refit_teacher: bool = False) -> Student:
    """The student of ``incumbent``'s alpha or, when ``judge`` and a challenger is significantly better
    on the validation rows, the challenger's (see the module's docstring), refitted with its validation
    rows (from the teacher refitted with them too, with ``refit_teacher``). The choice and its figures
    are in the student's ``alpha_choice``."""
    challengers = sorted({spec.alpha, *spec.alpha_alternatives} - {incumbent})
    kept = _contest(training_set, teacher, config, spec, incumbent, start)
    if not judge or not challengers:
        why = "an incremental update keeps" if not judge else "no other alpha is configured: keeping"
        chosen = _with_choice(kept.student, {"alpha": incumbent, "reason": f"{why} the incumbent alpha {incumbent}"})
        return refit_with_validation(chosen, training_set, teacher, config, spec, start, refit_teacher)
    rows, judged = int(kept.correct.size), [_score(kept, kept)]
    best = kept
    for alpha in challengers:
        challenger = _contest(training_set, teacher, config, spec, alpha, start)
        judged.append(_score(challenger, kept))
        if _significantly_better(challenger, kept, spec.alpha_switch_z) and challenger.correct.sum() > best.correct.sum():
            best = challenger
    verdict = (f"alpha {best.alpha} replaces the incumbent {incumbent}: right on significantly more of the validation rows "
               f"they disagree on (z {spec.alpha_switch_z})" if best is not kept else
               f"the incumbent alpha {incumbent} stays: no other alpha is right on significantly more of the {rows} "
               f"validation rows (z {spec.alpha_switch_z})")
    chosen = _with_choice(best.student, {"alpha": best.alpha, "reason": verdict, "validation_rows": rows, "judged": judged})
    return refit_with_validation(chosen, training_set, teacher, config, spec, start, refit_teacher)


def _contest(training_set: pl.DataFrame, teacher: Teacher, config: DatasetConfig, spec: StudentSpec, alpha: float,
             start: tuple[str, Weights] | None) -> _Contest:
    student = fit_student(training_set, teacher, config, spec.model_copy(update={"alpha": alpha}), start)
    validation = training_set.filter(pl.col(SPLIT) == VALIDATION)
    predicted = student.predict_proba(student_matrix(validation, teacher.preprocessing)).argmax(axis=1)
    return _Contest(alpha, student, predicted == label_codes(validation, config.classes))


def _wins_and_losses(challenger: _Contest, incumbent: _Contest) -> tuple[int, int]:
    """The validation rows only the challenger gets right, and those only the incumbent does."""
    return int((challenger.correct & ~incumbent.correct).sum()), int((incumbent.correct & ~challenger.correct).sum())


def _significantly_better(challenger: _Contest, incumbent: _Contest, z: float) -> bool:
    """A paired sign test: of the rows exactly one of the two gets right, the challenger's share is
    above a half by more than ``z`` standard errors."""
    wins, losses = _wins_and_losses(challenger, incumbent)
    return wins - losses > z * math.sqrt(wins + losses)


def _score(contest: _Contest, incumbent: _Contest) -> dict:
    wins, losses = _wins_and_losses(contest, incumbent)
    return {"alpha": contest.alpha, "validation_accuracy": round(float(contest.correct.mean()), 4) if contest.correct.size else None,
            "right_where_incumbent_wrong": wins, "wrong_where_incumbent_right": losses}


def _with_choice(student: Student, choice: dict) -> Student:
    student.alpha_choice = choice
    return student
