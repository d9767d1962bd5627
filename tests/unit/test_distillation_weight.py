"""The student's distillation weight: judged on full retrains, kept unless a challenger is significantly better;
the chosen student refitted with its validation rows."""

import numpy as np
import polars as pl

from pipeline.distillation_weight import distil, incumbent_alpha
from pipeline.encoding import label_codes, student_matrix
from pipeline.student import best_epoch, fit_student, held_out_rows
from pipeline.teacher import fit_teacher, refitted_on
from pipeline.training_set import SPLIT, TEST, TRAIN, VALIDATION


def _validation_accuracy(student, frame, teacher, config) -> float:
    validation = frame.filter(pl.col(SPLIT) == VALIDATION)
    predicted = student.predict_proba(student_matrix(validation, teacher.preprocessing)).argmax(axis=1)
    return float(np.mean(predicted == label_codes(validation, config.classes)))


def _misled_teacher(frame: pl.DataFrame, config):
    """A teacher of the same rows with their train labels shuffled: what it teaches is noise."""
    train = frame[SPLIT] == TRAIN
    shuffled = frame["label"].filter(train).sample(fraction=1.0, shuffle=True, seed=3)
    labels = frame["label"].to_list()
    for row, label in zip(np.flatnonzero(train.to_numpy()), shuffled.to_list(), strict=True):
        labels[row] = label
    return fit_teacher(frame.with_columns(pl.Series("label", labels)), config)


def test_a_student_whose_teacher_teaches_noise_switches_to_the_labels(trained):
    config, frame = trained.config, trained.frame
    teacher = _misled_teacher(frame, config)
    # no refit: the student returned is then the challenger judged on the validation rows
    spec = config.training.student.model_copy(update={"alpha_alternatives": (0.0,), "refit_with_validation": False})
    student = distil(frame, teacher, config, spec, incumbent=spec.alpha, judge=True)
    choice = student.alpha_choice
    assert choice["alpha"] == 0.0 == student.hyperparameters["alpha"]
    assert "replaces the incumbent 0.9" in choice["reason"]
    incumbent, challenger = choice["judged"]
    assert (incumbent["alpha"], challenger["alpha"]) == (0.9, 0.0)
    assert challenger["right_where_incumbent_wrong"] > 2 * challenger["wrong_where_incumbent_right"]
    assert challenger["validation_accuracy"] == round(_validation_accuracy(student, frame, teacher, config), 4)
    assert challenger["validation_accuracy"] > incumbent["validation_accuracy"] + 0.1 and student.refit == {}


def test_the_chosen_student_is_refitted_with_the_validation_rows_for_its_best_epochs(trained):
    config, frame = trained.config, trained.frame
    spec = config.training.student.model_copy(update={"alpha_alternatives": (), "epochs": 12})
    student = distil(frame, trained.teacher, config, spec, incumbent=0.0, judge=True)
    early_stopped = fit_student(frame, trained.teacher, config, spec.model_copy(update={"alpha": 0.0}))
    validation_rows = int((frame[SPLIT] == VALIDATION).sum())
    assert student.refit == {"validation_rows": validation_rows, "epochs": best_epoch(early_stopped.history), "teacher_rounds": None}
    assert student.history == early_stopped.history and student.hyperparameters["alpha"] == 0.0
    # the refit is the same fit on train + validation for the kept epochs: same weights, not the early-stopped ones
    merged = frame.with_columns(pl.when(pl.col(SPLIT) == VALIDATION).then(pl.lit(TRAIN)).otherwise(pl.col(SPLIT)).alias(SPLIT))
    by_hand = fit_student(merged, trained.teacher, config, spec.model_copy(update={"alpha": 0.0, "epochs": student.refit["epochs"]}))
    matrix = student_matrix(frame, trained.teacher.preprocessing)
    assert np.allclose(student.predict_proba(matrix), by_hand.predict_proba(matrix), atol=1e-6)
    assert not np.allclose(student.predict_proba(matrix), early_stopped.predict_proba(matrix), atol=1e-3)
    # its checks after training read rows it never learned from: the test split
    assert held_out_rows(frame, student)[SPLIT].unique().to_list() == [TEST]
    assert held_out_rows(frame, early_stopped)[SPLIT].unique().to_list() == [VALIDATION]


def test_a_student_that_listens_to_a_window_teacher_is_refitted_from_the_teacher_refitted_too(trained):
    config, frame = trained.config, trained.frame
    spec = config.training.student.model_copy(update={"alpha_alternatives": (), "epochs": 8})
    teacher = trained.teacher
    student = distil(frame, teacher, config, spec, incumbent=0.9, judge=True, refit_teacher=True)
    rounds = teacher.booster.best_iteration
    assert student.refit["teacher_rounds"] == rounds > 0
    merged = frame.with_columns(pl.when(pl.col(SPLIT) == VALIDATION).then(pl.lit(TRAIN)).otherwise(pl.col(SPLIT)).alias(SPLIT))
    refitted = refitted_on(teacher, merged.filter(pl.col(SPLIT) == TRAIN), config.training.seed)
    by_hand = fit_student(merged, refitted, config, spec.model_copy(update={"alpha": 0.9, "epochs": student.refit["epochs"]}))
    matrix = student_matrix(frame, teacher.preprocessing)
    assert np.allclose(student.predict_proba(matrix), by_hand.predict_proba(matrix), atol=1e-6)
    # the early-stopped teacher, not the refitted one, judged the epochs: the history is that of a fit from it
    assert student.history == fit_student(frame, teacher, config, spec.model_copy(update={"alpha": 0.9})).history
    # a student of the labels alone (alpha 0) does not listen to the teacher: no teacher is refitted for it
    labels_only = spec.model_copy(update={"alpha": 0.0})
    assert distil(frame, teacher, config, labels_only, incumbent=0.0, judge=True, refit_teacher=True).refit["teacher_rounds"] is None


def test_the_incumbent_stays_unless_the_evidence_is_strong_and_an_incremental_update_does_not_judge(trained):
    config, frame = trained.config, trained.frame
    teacher = _misled_teacher(frame, config)
    unconvinced = config.training.student.model_copy(update={"alpha_switch_z": 1e6})
    kept = distil(frame, teacher, config, unconvinced, incumbent=0.9, judge=True)
    assert kept.hyperparameters["alpha"] == 0.9 == kept.alpha_choice["alpha"]
    assert "stays" in kept.alpha_choice["reason"] and len(kept.alpha_choice["judged"]) == 2
    # an incremental update trains the incumbent's student only, even the stream's earlier choice of 0
    incremental = distil(frame, trained.teacher, config, config.training.student, incumbent=0.0, judge=False)
    assert incremental.hyperparameters["alpha"] == 0.0 and "judged" not in incremental.alpha_choice
    assert "incremental update keeps the incumbent alpha 0.0" in incremental.alpha_choice["reason"]


def test_the_incumbent_is_the_production_students_recorded_alpha(trained):
    spec = trained.config.training.student
    assert incumbent_alpha(spec, None) == spec.alpha
    assert incumbent_alpha(spec, trained.student) == trained.student.hyperparameters["alpha"]
    trained_earlier = type(trained.student)(trained.student.model, trained.student.architecture, [], hyperparameters={"alpha": 0.0})
    assert incumbent_alpha(spec, trained_earlier) == 0.0
    unrecorded = type(trained.student)(trained.student.model, trained.student.architecture, [], hyperparameters={})
    assert incumbent_alpha(spec, unrecorded) == spec.alpha
