"""The student's distillation weight: judged on full retrains, kept unless a challenger is significantly better."""

import numpy as np
import polars as pl

from pipeline.distillation_weight import distil, incumbent_alpha
from pipeline.encoding import label_codes, student_matrix
from pipeline.teacher import fit_teacher
from pipeline.training_set import SPLIT, TRAIN, VALIDATION


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
    spec = config.training.student.model_copy(update={"alpha_alternatives": (0.0,)})
    student = distil(frame, teacher, config, spec, incumbent=spec.alpha, judge=True)
    choice = student.alpha_choice
    assert choice["alpha"] == 0.0 == student.hyperparameters["alpha"]
    assert "replaces the incumbent 0.9" in choice["reason"]
    incumbent, challenger = choice["judged"]
    assert (incumbent["alpha"], challenger["alpha"]) == (0.9, 0.0)
    assert challenger["right_where_incumbent_wrong"] > 2 * challenger["wrong_where_incumbent_right"]
    assert challenger["validation_accuracy"] == round(_validation_accuracy(student, frame, teacher, config), 4)
    assert challenger["validation_accuracy"] > incumbent["validation_accuracy"] + 0.1


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
