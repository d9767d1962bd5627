"""Teacher, student, ONNX export and evaluation on a small real training set."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline import evaluation, export
from pipeline.dataset import StudentSpec
from pipeline.encoding import label_codes, student_matrix
from pipeline.sample_sizes import student_schedule
from pipeline.student import (
    WEIGHTS_FILE,
    Student,
    StudentData,
    StudentMLP,
    adapted_spec,
    encoding_fingerprint,
    fit_student,
    new_model,
    student_data,
    train_epochs,
    transfer_set,
    unseen_category_copies,
    validation_loss,
)
from pipeline.teacher import MODEL_FILE, Teacher, fit_teacher
from pipeline.training_set import SPLIT, TEST, TRAIN, UNLABELLED


def test_teacher_is_saved_as_lightgbm_text_and_reloads_identically(trained, tmp_path: Path):
    frame, teacher, directory = trained.frame, trained.teacher, tmp_path
    teacher.save(directory)
    assert (directory / MODEL_FILE).read_text().startswith("tree\n")
    reloaded = Teacher.load(directory)
    assert np.allclose(reloaded.predict_proba(frame.head(200)), teacher.predict_proba(frame.head(200)))


def test_teacher_and_student_beat_the_majority_class_and_agree(trained):
    config, frame, teacher, student = trained.config, trained.frame, trained.teacher, trained.student
    test = frame.filter(pl.col(SPLIT) == TEST)
    y = label_codes(test, config.classes)
    majority = np.bincount(y).max() / len(y)
    teacher_acc = (teacher.predict_proba(test).argmax(1) == y).mean()
    student_pred = student.predict_proba(student_matrix(test, teacher.preprocessing)).argmax(1)
    assert teacher_acc > majority + 0.05
    assert (student_pred == y).mean() > majority + 0.05
    assert (student_pred == teacher.predict_proba(test).argmax(1)).mean() > 0.85


def test_student_state_dict_reloads_with_weights_only(trained, tmp_path: Path):
    frame, teacher, student = trained.frame, trained.teacher, trained.student
    student.save(tmp_path)
    reloaded = Student.load(tmp_path)
    x = student_matrix(frame.head(100), teacher.preprocessing)
    assert np.allclose(reloaded.predict_proba(x), student.predict_proba(x))
    assert (tmp_path / WEIGHTS_FILE).stat().st_size > 0
    assert [h["epoch"] for h in reloaded.history] == list(range(1, len(reloaded.history) + 1))


def test_onnx_export_matches_torch_on_held_out_rows(trained, tmp_path: Path):
    frame, teacher, student = trained.frame, trained.teacher, trained.student
    path = tmp_path / export.ONNX_FILE
    export.export_onnx(student, path)
    held_out = student_matrix(frame.filter(pl.col(SPLIT) == TEST), teacher.preprocessing)
    parity = export.check_parity(student, path, held_out)
    assert parity.rows == len(held_out) > 0
    assert parity.ok() and parity.max_abs_diff < 1e-5


def test_parity_catches_a_model_that_differs(trained, tmp_path: Path):
    frame, teacher, student = trained.frame, trained.teacher, trained.student
    path = tmp_path / export.ONNX_FILE
    export.export_onnx(student, path)
    arch = student.architecture
    untrained = Student(StudentMLP(arch["input_width"], tuple(arch["hidden"]), arch["n_classes"]), arch, [])
    parity = export.check_parity(untrained, path, student_matrix(frame.head(300), teacher.preprocessing))
    assert not parity.ok() and parity.max_abs_diff > 1e-3


def test_evaluation_reports_consistent_metrics_and_slices(trained):
    config, frame, teacher, student = trained.config, trained.frame, trained.teacher, trained.student
    report = evaluation.evaluate_models(frame, teacher, student, config)
    test_rows = frame.filter(pl.col(SPLIT) == TEST).height
    for model in ("teacher", "student"):
        metrics = report[model]
        assert metrics["rows"] == test_rows == report["test_rows"]
        assert sum(map(sum, metrics["confusion_matrix"])) == test_rows
        assert metrics["accuracy"] == pytest.approx(np.trace(metrics["confusion_matrix"]) / test_rows)
        assert set(metrics["per_class"]) == set(config.classes)
        assert sum(s["rows"] for s in metrics["slices"]["site"].values()) == test_rows
        assert set(metrics["slices"]["firmware_version"]) <= {"3.0.9", "3.1.4", "3.2.0"}
        assert 0 < metrics["newest_day"]["rows"] <= test_rows
    png = evaluation.confusion_png({m: report[m]["confusion_matrix"] for m in ("teacher", "student")}, config.classes)
    assert png.startswith(b"\x89PNG") and len(png) < 60_000


def test_student_training_stops_early_and_keeps_the_best_epoch(trained):
    """Validation rows that contradict the training rows: their loss gets worse as the student learns,
    so training must end ``patience`` epochs after the best one, with the best weights restored."""
    config, frame, teacher = trained.config, trained.frame, trained.teacher
    spec = config.training.student.model_copy(update={"batch_size": 256, "patience": 2})
    data = student_data(transfer_set(frame, spec), teacher, config, spec)
    contradicting = StudentData(data.x[:500], data.soft[:500].flip(1), data.labels[:500].clamp(min=0) * 0, data.weights[:500])
    model = new_model(data.x.shape[1], data.soft.shape[1], spec, seed=1)
    history = train_epochs(model, data, contradicting, spec, epochs=30, seed=1, patience=2)
    best = min(history, key=lambda h: h["validation_loss"])
    assert len(history) == best["epoch"] + 2 < 30
    assert validation_loss(model, contradicting, spec) == pytest.approx(best["validation_loss"])


def test_student_batch_and_epochs_follow_the_transfer_set_unless_the_policy_sized_them(trained):
    config, frame = trained.config, trained.frame
    rows = transfer_set(frame, config.training.student).height
    sized = adapted_spec(frame, config, {})
    assert (sized.batch_size, sized.epochs) == tuple(student_schedule(rows, config.feedback.policy.student_steps).values())
    assert sized.batch_size * sized.epochs >= config.feedback.policy.student_steps * sized.batch_size / rows
    small = adapted_spec(frame.head(300), config, {})
    assert small.batch_size == 64 and small.epochs == 60  # a small transfer set gets the most epochs of the smallest batch
    assert adapted_spec(frame, config, {"batch_size": 512, "epochs": 7}).model_dump(include={"batch_size", "epochs"}) == \
        {"batch_size": 512, "epochs": 7}
    with pytest.raises(ValueError, match="batch_size"):  # validated as the YAML is, not copied in unchecked
        adapted_spec(frame, config, {"batch_size": 0, "epochs": 7})


@pytest.mark.parametrize(("rows", "batch", "epochs"), [(336, 64, 60), (14_000, 128, 42), (26_880, 256, 43), (400_000, 1024, 12)])
def test_student_schedule_allows_three_times_the_target_steps(rows, batch, epochs):
    """Room for early stopping: capped at the target, runs on the simulator ended still improving."""
    assert student_schedule(rows, 1500) == {"batch_size": batch, "epochs": epochs}


def test_unseen_category_copies_blank_categories_of_labelled_rows_and_carry_no_label(trained):
    config, frame = trained.config, trained.frame
    categorical = [f.name for f in config.categorical_features]
    transfer = transfer_set(frame, config.training.student)
    labelled = transfer.filter(pl.col(SPLIT) == TRAIN).height
    copies = unseen_category_copies(transfer, categorical, 0.5, seed=7)
    assert copies.height == round(labelled * 0.5) and copies[SPLIT].unique().to_list() == [UNLABELLED]
    blanked = copies.select(pl.any_horizontal(pl.col(categorical).is_null())).to_series()
    assert blanked.all()  # every copy has at least one category nobody saw
    assert 0.3 < copies.select(pl.col(categorical).is_null().mean()).row(0)[0] < 0.8
    assert copies.drop(categorical, SPLIT).equals(transfer.filter(pl.col(SPLIT) == TRAIN).sample(fraction=0.5, seed=7).drop(categorical, SPLIT))
    assert unseen_category_copies(transfer, categorical, 0.0, seed=7).height == 0
    assert unseen_category_copies(transfer, [], 0.5, seed=7).height == 0


def test_a_student_taught_unseen_categories_follows_its_teacher_on_them(trained):
    """Test rows whose categories nobody saw (all blanked): the default student follows its teacher
    on them, and the copies are why where the student reads standardised numerics only (without
    bins, whose thresholds carry most of what the categories would, it strays the most)."""
    config, frame = trained.config, trained.frame
    categorical = [f.name for f in config.categorical_features]
    unseen = frame.filter(pl.col(SPLIT) == TEST).with_columns(pl.lit(None, pl.String).alias(c) for c in categorical)

    def agreement(student: Student, teacher: Teacher) -> float:
        taught = teacher.predict_proba(unseen).argmax(axis=1)
        return float((student.predict_proba(student_matrix(unseen, teacher.preprocessing)).argmax(axis=1) == taught).mean())

    assert agreement(trained.student, trained.teacher) >= 0.95
    no_bins = config.model_copy(update={"training": config.training.model_copy(update={
        "student": config.training.student.model_copy(update={"numeric_bins": 0})})})
    teacher = fit_teacher(frame, no_bins)
    taught, untaught = (fit_student(frame, teacher, no_bins, no_bins.training.student.model_copy(update={"unseen_category_copies": copies}))
                        for copies in (0.5, 0.0))
    assert agreement(taught, teacher) > agreement(untaught, teacher) + 0.02, (agreement(taught, teacher), agreement(untaught, teacher))


def test_the_encoding_fingerprint_follows_bin_counts_not_bin_edges(trained):
    """Weights of a student with other bin counts would shift columns; moved edges only rescale them."""
    preprocessing = trained.teacher.preprocessing
    first = preprocessing["numeric"][0]
    moved = {**preprocessing, "numeric": [{**first, "edges": [e + 0.5 for e in first["edges"]]}, *preprocessing["numeric"][1:]]}
    fewer = {**preprocessing, "numeric": [{**first, "edges": first["edges"][:-1]}, *preprocessing["numeric"][1:]]}
    assert len(first["edges"]) == 9
    assert encoding_fingerprint(moved) == encoding_fingerprint(preprocessing) != encoding_fingerprint(fewer)


def test_a_wide_dataset_gets_fewer_bins_per_numeric_and_none_rather_than_one():
    spec = StudentSpec(numeric_bins=8, max_bin_columns=120)
    assert [spec.bins_per_numeric(n) for n in (0, 15, 16, 40, 60, 61)] == [8, 8, 7, 3, 2, 0]
