"""The student's shape sized to the device: a two-objective Optuna search of width, depth and whether
the first layer is int8, for validation macro-F1 against single-row latency through the edge runtime.

Each trial distils a student of the suggested shape (the batch size, epochs and loss as configured),
exports and quantizes it exactly as ``onnx_student`` ships it, and measures the int8 model on the
validation split only (the test split stays for the evaluation and the release gates): macro-F1 of
its predictions, and the median time of ``predict_row`` (raw row in, encoding included) through the
runtime's own ``OnnxModel`` on one thread. The search is bounded by ``tuning.student.trials`` and
``budget_seconds``, and starts from the YAML's student (enqueued as the first trial), so the choice
can only be judged against what would have shipped without it.

The chosen point is the most accurate of this search's Pareto front whose latency fits the package
budget (``deployment.gates.max_latency_us``) and whose package would fit ``max_package_bytes``
(``edge_package.estimated_bytes``: the package gate checks both, and a wide three-layer student
outgrows 100 KB); when none fits, the YAML's student is kept and the reason says so. The study
lives in Optuna's storage under ``<dataset>/student``: a later retrain continues it (the sampler
learns from earlier searches' trials), but only this search's trials are candidates, since only
they were measured on this data.

The search runs on full retrains with ``tuning.enabled``; an incremental update keeps the production
student's shape (``train_student``). Single-row latency on a shared machine is noisy: a trial's
figure is a median over ``LATENCY_CALLS`` calls, which ranks shapes a few tenths of a µs apart only
roughly, and since the sampler reads those figures, two runs of the same seed may try different
shapes after the first random ones (``benchmarks/student_search.py``).
"""

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import optuna
import polars as pl

from pipeline import edge_package, quantize, release, studies
from pipeline.dataset import DatasetConfig, GateSpec, StudentSearchSpec, StudentSpec
from pipeline.distillation_weight import distil, incumbent_alpha
from pipeline.encoding import label_codes, student_matrix
from pipeline.evaluation import classification_metrics
from pipeline.evergreen_edge import OnnxModel
from pipeline.export import ONNX_FILE
from pipeline.policy import FULL
from pipeline.student import Student, Weights, fit_student
from pipeline.teacher import Teacher
from pipeline.training_set import SPLIT, VALIDATION

SEARCH = "student"
"""The study's name within the dataset's: ``<dataset>/student``."""

LATENCY_CALLS = 1000
"""Single-row calls a trial's latency is the median of: about 20 ms per trial."""
WARM_START = "warm_start"
optuna.logging.set_verbosity(optuna.logging.WARNING)  # one INFO line per trial otherwise


@dataclass(frozen=True)
class Trial:
    """One measured shape: its validation macro-F1, single-row latency and package size as shipped (int8)."""

    number: int
    hidden: tuple[int, ...]
    quantize_first_layer: bool
    macro_f1: float
    latency_us: float
    package_bytes: int
    seconds: float
    warm_start: bool = False
    pareto: bool = False

    def dominates(self, other: "Trial") -> bool:
        return (self.macro_f1 >= other.macro_f1 and self.latency_us <= other.latency_us
                and (self.macro_f1, self.latency_us) != (other.macro_f1, other.latency_us))

    def to_json(self) -> dict:
        return {**asdict(self), "hidden": list(self.hidden), "depth": len(self.hidden)}


@dataclass(frozen=True)
class StudentSearch:
    """A search's trials (this search's only, in order), its choice and the student to ship."""

    study: str
    trials: list[Trial]
    chosen: Trial | None
    """None: no trial fits the package gate's budgets, and the YAML's student is kept."""
    reason: str
    gates: GateSpec
    seconds: float
    student: Student

    @property
    def front(self) -> list[Trial]:
        return sorted((t for t in self.trials if t.pareto), key=lambda t: t.latency_us)

    def summary(self) -> dict:
        """What the shipped student records of the search (``Student.search``), for the lineage."""
        return {"study": self.study, "trials": len(self.trials), "seconds": round(self.seconds, 1),
                "max_latency_us": self.gates.max_latency_us, "max_package_bytes": self.gates.max_package_bytes,
                "reason": self.reason,
                "chosen": self.chosen.to_json() if self.chosen else None}


@dataclass(frozen=True)
class _Judge:
    """What every trial is measured on: the validation rows, encoded and raw, and calibration rows."""

    matrix: np.ndarray
    labels: np.ndarray
    raw: pl.DataFrame
    calibration: np.ndarray
    preprocessing: dict
    classes: tuple[str, ...]

    @classmethod
    def of(cls, training_set: pl.DataFrame, teacher: Teacher, config: DatasetConfig) -> "_Judge":
        validation = training_set.filter(pl.col(SPLIT) == VALIDATION)
        if validation.height == 0:
            raise ValueError("the student search judges shapes on the validation split, and it has no rows")
        preprocessing = teacher.preprocessing
        calibration = student_matrix(quantize.calibration_rows(training_set, config.training.seed), preprocessing)
        return cls(student_matrix(validation, preprocessing), label_codes(validation, config.classes), validation,
                   calibration, preprocessing, config.classes)

    def measure(self, student: Student) -> tuple[float, float, int]:
        """Validation macro-F1 and median single-row µs of the student's int8 model, as shipped, and
        the estimated bytes of its package."""
        with tempfile.TemporaryDirectory(prefix="evergreen-student-search-") as tmp:
            fp32, int8 = Path(tmp) / ONNX_FILE, Path(tmp) / quantize.INT8_FILE
            quantize.export_student(student, fp32, int8, self.calibration)
            models = {path.name: path.read_bytes() for path in (fp32, int8)}
        model = OnnxModel(models[int8.name], self.preprocessing, self.classes)
        predicted = model.predict_proba_encoded(self.matrix).argmax(axis=1)
        macro_f1 = classification_metrics(self.labels, predicted, self.classes)["macro_f1"]
        return (macro_f1, release.row_latency_us(model, self.raw, LATENCY_CALLS),
                edge_package.estimated_bytes(models, self.preprocessing))


def train_student(training_set: pl.DataFrame, teacher: Teacher, config: DatasetConfig, spec: StudentSpec, action: str,
                  production: Student | None, start: tuple[str, Weights] | None = None,
                  storage: str | None = None, refit_teacher: bool = False) -> tuple[Student, StudentSearch | None]:
    """The student of a retrain, and the search that shaped it if one ran. ``tuning.enabled: false``:
    the configured shape, with the distillation weight a full retrain or a first model judges
    (``pipeline.distillation_weight``; an incremental update keeps the ``production`` student's).
    Enabled: a full retrain (``action``), or a first model, searches the shape with the incumbent
    weight; an incremental update keeps the production student's shape and first-layer choice.
    ``refit_teacher`` (tuning disabled; the search does not refit): the teacher was trained on the window
    (``teacher_update.trained_on_window``), so the student's refit may distil it refitted with the
    validation rows."""
    incumbent = incumbent_alpha(spec, production)
    if not config.training.tuning.enabled:
        return distil(training_set, teacher, config, spec, incumbent, judge=action == FULL or production is None, start=start,
                      refit_teacher=refit_teacher), None
    spec = spec.model_copy(update={"alpha": incumbent})
    if action == FULL or production is None:
        search = search_student(training_set, teacher, config, spec, start, storage)
        return search.student, search
    student = fit_student(training_set, teacher, config, with_hidden(spec, production.architecture["hidden"]), start)
    return _quantized(student, production.quantize_first_layer), None


def search_student(training_set: pl.DataFrame, teacher: Teacher, config: DatasetConfig, spec: StudentSpec,
                   start: tuple[str, Weights] | None = None,
                   storage: str | None = None) -> StudentSearch:
    """Search the student's shape for ``training_set`` (module docstring); ``spec`` is the configured
    student after the policy's adaptation, whose shape is the warm start. ``storage``: the URL of
    Optuna's storage (``pipeline.studies``; None: in memory, forgotten after the call). On a SQLite
    file the whole search holds its turn (``studies.exclusive``): two searches enqueueing their warm
    start at once would both take it, and one would fail."""
    with studies.exclusive(storage):
        return _search(training_set, teacher, config, spec, start, studies.storage(storage))


def _search(training_set: pl.DataFrame, teacher: Teacher, config: DatasetConfig, spec: StudentSpec,
            start: tuple[str, Weights] | None, storage: optuna.storages.BaseStorage) -> StudentSearch:
    tuning, started = config.training.tuning.student, time.perf_counter()
    judge = _Judge.of(training_set, teacher, config)
    study = optuna.create_study(study_name=studies.study_name(config.name, SEARCH), storage=storage, load_if_exists=True,
                                directions=["maximize", "minimize"], sampler=optuna.samplers.TPESampler(seed=config.training.seed))
    study.enqueue_trial(_params(spec.hidden, False), user_attrs={WARM_START: True})
    space = _space(tuning, spec.hidden)
    students: dict[int, Student] = {}
    trials: list[Trial] = []

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        began = time.perf_counter()
        hidden, first_layer = _suggest(trial, space)
        student = _quantized(fit_student(training_set, teacher, config, with_hidden(spec, hidden), start), first_layer)
        macro_f1, latency_us, package_bytes = judge.measure(student)
        students[trial.number] = student
        trials.append(Trial(trial.number, hidden, first_layer, macro_f1, latency_us, package_bytes, time.perf_counter() - began,
                            bool(trial.user_attrs.get(WARM_START))))
        return macro_f1, latency_us

    study.optimize(objective, n_trials=tuning.trials, timeout=tuning.budget_seconds)
    marked = _mark_front(trials)
    gates = config.deployment.gates
    chosen, reason = choose(marked, gates)
    warm = next(t for t in marked if t.warm_start)
    search = StudentSearch(studies.study_name(config.name, SEARCH), marked, chosen, reason, gates, time.perf_counter() - started,
                           students[(chosen or warm).number])
    search.student.search = search.summary()
    return search


def with_hidden(spec: StudentSpec, hidden: tuple[int, ...] | list[int]) -> StudentSpec:
    return spec.model_copy(update={"hidden": tuple(hidden)})


def _quantized(student: Student, first_layer: bool) -> Student:
    student.quantize_first_layer = first_layer
    return student


def _params(hidden: tuple[int, ...], quantize_first_layer: bool) -> dict:
    """A shape as the trial parameters ``_suggest`` reads (``enqueue_trial``)."""
    return {"depth": len(hidden), **{f"width_{i + 1}": w for i, w in enumerate(hidden)}, "quantize_first_layer": quantize_first_layer}


def _space(tuning: StudentSearchSpec, warm: tuple[int, ...]) -> StudentSearchSpec:
    """The configured search space, widened to hold the warm start's shape."""
    widths, depths = [*tuning.widths, *warm], [*tuning.depths, len(warm)]
    return tuning.model_copy(update={"widths": (min(widths), max(widths)), "depths": (min(depths), max(depths))})


def _suggest(trial: optuna.Trial, tuning: StudentSearchSpec) -> tuple[tuple[int, ...], bool]:
    depth = trial.suggest_int("depth", *tuning.depths)
    hidden = tuple(trial.suggest_int(f"width_{i + 1}", *tuning.widths, log=True) for i in range(depth))
    first_layer = bool(trial.suggest_categorical("quantize_first_layer", [False, True])) if tuning.quantize_first_layer else False
    return hidden, first_layer


def _mark_front(trials: list[Trial]) -> list[Trial]:
    """The trials with ``pareto`` set on those no other trial dominates."""
    return [Trial(**{**asdict(t), "pareto": not any(o.dominates(t) for o in trials)}) for t in trials]


def choose(trials: list[Trial], gates: GateSpec) -> tuple[Trial | None, str]:
    """The most accurate trial (the faster on a tie) within the package gate's latency and size
    budgets, and why; None when none fits, and the YAML's student (the warm start) is kept. Within
    the latency budget the most accurate trial is a Pareto point; only the size budget can pick one
    off the front."""
    front = [t for t in trials if t.pareto]
    fitting = [t for t in trials if t.latency_us <= gates.max_latency_us and t.package_bytes <= gates.max_package_bytes]
    warm = next(t for t in trials if t.warm_start)
    budget = f"the {gates.max_latency_us:g} µs and {gates.max_package_bytes:,} byte budgets"
    yaml = f"the YAML's student {_shape(warm)}: macro-F1 {warm.macro_f1:.4f} at {warm.latency_us:.1f} µs"
    if not fitting:
        fastest = min(trials, key=lambda t: t.latency_us)
        return None, (f"no trial fits {budget} (the fastest, {_shape(fastest)}, takes {fastest.latency_us:.1f} µs, "
                      f"about {fastest.package_bytes:,} bytes): the YAML's student is kept; {yaml}")
    best = max(fitting, key=lambda t: (t.macro_f1, -t.latency_us))
    where = "of the Pareto front" if best.pareto else "within the size budget (the more accurate Pareto points outgrow it)"
    return best, (f"{_shape(best)}: the best validation macro-F1 ({best.macro_f1:.4f}) {where} ({len(front)} points of "
                  f"{len(trials)} trials), at {best.latency_us:.1f} µs and about {best.package_bytes:,} bytes, within "
                  f"{budget}; {yaml}")


def _shape(trial: Trial) -> str:
    hidden = "x".join(map(str, trial.hidden)) or "no hidden layer"
    return f"{hidden}, first layer {'int8' if trial.quantize_first_layer else 'fp32'}"
