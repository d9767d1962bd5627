"""The student search (issue 22): a Pareto front of validation macro-F1 against single-row latency,
a choice within the latency budget, the YAML's student as the warm start, a study that continues
across retrains, nothing changed with tuning off, and the int8 first-layer choice reaching the ONNX."""

from pathlib import Path

import onnx
import pytest
import torch

from pipeline import quantize
from pipeline.dataset import DatasetConfig, StudentSpec
from pipeline.encoding import student_matrix
from pipeline.evaluation import pareto_png
from pipeline.export import INPUT_NAME, ONNX_FILE
from pipeline.policy import FULL, INCREMENTAL
from pipeline.student import Student, fit_student
from pipeline.student_search import StudentSearch, choose, search_student, train_student

TRIALS = 4


def tuned(config: DatasetConfig, trials: int = TRIALS, max_latency_us: float = 1000.0) -> DatasetConfig:
    """``config`` with the student search on, bounded by ``trials`` and the latency budget."""
    training = config.training.model_copy(update={"tuning": config.training.tuning.model_copy(update={
        "enabled": True, "student": config.training.tuning.student.model_copy(update={"trials": trials, "widths": (4, 32)})})})
    deployment = config.deployment.model_copy(update={"gates": config.deployment.gates.model_copy(update={"max_latency_us": max_latency_us})})
    return config.model_copy(update={"training": training, "deployment": deployment})


@pytest.fixture(scope="module")
def spec(trained) -> StudentSpec:
    """The configured student, trained for two epochs: the search's trials stay fast."""
    return trained.config.training.student.model_copy(update={"epochs": 2, "batch_size": 512})


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('tuning') / 'optuna.db'}"


@pytest.fixture(scope="module")
def search(trained, spec, storage) -> StudentSearch:
    return search_student(trained.frame, trained.teacher, tuned(trained.config), spec, storage=storage)


def test_the_search_returns_its_pareto_front(search: StudentSearch):
    assert len(search.trials) == TRIALS
    front = search.front
    assert front and all(t.pareto for t in front)
    for trial in search.trials:  # on the front exactly when no other trial dominates it
        assert trial.pareto == (not any(other.dominates(trial) for other in search.trials))
    assert [t.latency_us for t in front] == sorted(t.latency_us for t in front)
    assert all(0 <= t.macro_f1 <= 1 and t.latency_us > 0 for t in search.trials)


def test_the_warm_start_is_the_yaml_student_and_trial_0(search: StudentSearch, spec: StudentSpec):
    first = search.trials[0]
    assert first.number == 0 and first.warm_start
    assert (first.hidden, first.quantize_first_layer) == (spec.hidden, False)
    assert not any(t.warm_start for t in search.trials[1:])


def test_the_chosen_point_is_the_most_accurate_within_the_latency_budget(search: StudentSearch):
    chosen, gates = search.chosen, search.gates
    assert chosen is not None and chosen.pareto and chosen.latency_us <= gates.max_latency_us
    assert chosen.package_bytes <= gates.max_package_bytes
    assert chosen.macro_f1 == max(t.macro_f1 for t in search.front if t.latency_us <= gates.max_latency_us)
    student = search.student
    assert tuple(student.architecture["hidden"]) == chosen.hidden == tuple(student.hyperparameters["hidden"])
    assert student.quantize_first_layer == chosen.quantize_first_layer
    assert student.search["chosen"]["number"] == chosen.number and student.search["reason"] == search.reason


def test_no_point_within_the_budget_keeps_the_yaml_student(search: StudentSearch):
    chosen, reason = choose(search.trials, search.gates.model_copy(update={"max_latency_us": 0.001}))
    assert chosen is None and "no trial fits the 0.001 µs" in reason and "YAML's student is kept" in reason


def test_a_student_whose_package_outgrows_the_size_budget_is_not_chosen(search: StudentSearch):
    """The package gate checks the size too: a wide three-layer student outgrows 100 KB."""
    biggest = max(search.trials, key=lambda t: t.package_bytes)
    smaller = [t for t in search.trials if t.package_bytes < biggest.package_bytes]
    chosen, reason = choose(search.trials, search.gates.model_copy(update={"max_package_bytes": biggest.package_bytes - 1}))
    assert chosen is not None and chosen in smaller
    assert chosen.macro_f1 == max(t.macro_f1 for t in smaller) and "byte budgets" in reason


def test_a_later_search_continues_the_study_and_keeps_the_yaml_student_over_budget(trained, spec, storage, search):
    later = search_student(trained.frame, trained.teacher, tuned(trained.config, trials=2, max_latency_us=0.001), spec,
                           storage=storage)
    assert [t.number for t in later.trials] == [TRIALS, TRIALS + 1]  # the same study, its history kept
    assert later.trials[0].warm_start
    assert later.chosen is None and "YAML's student is kept" in later.reason
    assert tuple(later.student.architecture["hidden"]) == spec.hidden and not later.student.quantize_first_layer


def test_the_pareto_plot_is_a_png(search: StudentSearch):
    chosen = search.chosen.to_json() if search.chosen else None
    assert pareto_png([t.to_json() for t in search.trials], chosen, search.gates.max_latency_us).startswith(b"\x89PNG")


def test_tuning_off_trains_exactly_the_configured_student(trained, spec):
    """Not even the storage is opened: a search would fail on this one. (No other distillation weight
    to judge and no refit here: both are tested in test_distillation_weight.py.)"""
    spec = spec.model_copy(update={"alpha_alternatives": (), "refit_with_validation": False})
    student, search = train_student(trained.frame, trained.teacher, trained.config, spec, FULL, None,
                                    storage="sqlite:////nonexistent/folder/optuna.db")
    today = fit_student(trained.frame, trained.teacher, trained.config, spec)
    assert search is None and student.search == {} and not student.quantize_first_layer
    assert student.architecture == today.architecture and student.hyperparameters == today.hyperparameters
    assert student.history == today.history
    for name, weights in today.model.state_dict().items():
        assert torch.equal(student.model.state_dict()[name], weights)


def test_an_incremental_update_keeps_the_production_students_shape(trained, spec):
    production = fit_student(trained.frame, trained.teacher, trained.config, spec.model_copy(update={"hidden": (8,), "epochs": 1}))
    production.quantize_first_layer = True
    student, search = train_student(trained.frame, trained.teacher, tuned(trained.config), spec, INCREMENTAL, production)
    assert search is None and student.architecture["hidden"] == [8] and student.quantize_first_layer


@pytest.mark.parametrize("first_layer", [False, True])
def test_the_first_layer_choice_travels_with_the_student_to_the_int8_onnx(trained, spec, tmp_path: Path, first_layer: bool):
    student = fit_student(trained.frame, trained.teacher, trained.config, spec.model_copy(update={"epochs": 1}))
    student.quantize_first_layer = first_layer
    student.save(tmp_path / "saved")
    loaded = Student.load(tmp_path / "saved")  # as onnx_student receives it
    calibration = quantize.calibration_rows(trained.frame, trained.config.training.seed)
    fp32, int8 = tmp_path / ONNX_FILE, tmp_path / quantize.INT8_FILE
    quantize.export_student(loaded, fp32, int8, student_matrix(calibration, trained.teacher.preprocessing))
    graph = onnx.load(str(int8)).graph
    producer = {output: node for node in graph.node for output in node.output}
    first_gemm = next(node for node in graph.node if node.op_type == "Gemm")
    reads = producer.get(first_gemm.input[0])
    assert (reads is not None and reads.op_type == "DequantizeLinear") == first_layer
    assert (first_gemm.input[0] == INPUT_NAME) == (not first_layer)
    int8_weights = [i for i in graph.initializer if i.name.endswith("weight_quantized") and i.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) == len(student.architecture["hidden"]) + (1 if first_layer else 0)


def test_the_lineage_records_the_chosen_shape_and_why(trained, search: StudentSearch, tmp_path: Path):
    from pipeline.evaluation import EVALUATION_FILE, EvaluationReport, evaluate_models
    from pipeline.lineage import version_entry
    from pipeline.reference_rows import reference_rows
    from pipeline.registry import REFERENCE_FILE
    from pipeline.student import ARCHITECTURE_FILE
    from pipeline.teacher import PREPROCESSING_FILE
    from pipeline.teacher_update import UPDATE_FILE, WINDOW, Attempt, TeacherUpdate

    config, frame = tuned(trained.config), trained.frame
    TeacherUpdate(trained.teacher, WINDOW, "full", attempts=[Attempt(WINDOW, 1.0)]).save(tmp_path)
    search.student.save(tmp_path)
    EvaluationReport(evaluate_models(frame, trained.teacher, search.student, config)).save(tmp_path)
    reference_rows(frame, config).write_parquet(tmp_path / REFERENCE_FILE)
    files = {name: tmp_path / name for name in (PREPROCESSING_FILE, UPDATE_FILE, ARCHITECTURE_FILE, EVALUATION_FILE, REFERENCE_FILE)}
    lineage = version_entry(files, frame, "2026-10-04", "run-1", None, config)["lineage"]
    assert lineage["student_search"] == search.summary() and lineage["student_search"]["reason"] == search.reason
    assert lineage["params"]["student"]["hidden"] == list(search.student.architecture["hidden"])


@pytest.mark.parametrize("field", ["widths", "depths"])
def test_a_search_range_upside_down_is_a_config_error(field: str):
    from pydantic import ValidationError

    from pipeline.dataset import StudentSearchSpec

    with pytest.raises(ValidationError, match=rf"tuning.student.{field}: need 1 <= low <= high, got \[3, 2\]"):
        StudentSearchSpec.model_validate({field: (3, 2)})
