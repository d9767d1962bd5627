"""The student: a small torch MLP distilled from the teacher, small enough for a modem's CPU.

Distillation loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * weighted cross-entropy
on the rows' labels, where ``_T`` means softmax of scores divided by the temperature T (the T^2
keeps the soft term's gradients on the hard term's scale). The transfer set is what the teacher
scores for the student to imitate: the labelled training rows, the window's unlabelled rows (the
soft labels are what make them useful) and the augmented rows. The batch size and epochs follow the
transfer set's size, training stops once the validation loss has not improved for ``patience``
epochs, and the epoch kept is the one with the best validation loss; the shipped student is then fitted
again on the training and validation rows for that many epochs (``refit_with_validation``). The same loss trains a site's local update in federated training
(``pipeline.federated``), where a FedProx term may hold the weights near the global ones.
"""

import copy
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

import numpy as np
import polars as pl
import torch
from torch import nn
from torch.nn import functional as F

from pipeline import atomic
from pipeline.dataset import DatasetConfig, StudentSpec
from pipeline.encoding import NO_LABEL, label_codes, student_matrix
from pipeline.sample_sizes import student_schedule
from pipeline.teacher import Teacher, refitted_on
from pipeline.training_set import AUGMENTED, PROVENANCE, SPLIT, TEST, TRAIN, UNLABELLED, VALIDATION, WEIGHT

WEIGHTS_FILE, ARCHITECTURE_FILE = "student.pt", "student.json"


class StudentMLP(nn.Module):
    def __init__(self, input_width: int, hidden: tuple[int, ...], n_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        width = input_width
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Probabilities(nn.Module):
    """The exported graph: logits -> class probabilities, what a device needs."""

    def __init__(self, model: StudentMLP):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


Weights = dict[str, np.ndarray]
"""A student's parameters as plain arrays: what federated sites and the aggregator exchange."""


def weights_of(model: StudentMLP) -> Weights:
    return {name: tensor.detach().cpu().numpy().copy() for name, tensor in model.state_dict().items()}


def load_weights(model: StudentMLP, weights: Weights) -> None:
    model.load_state_dict({name: torch.from_numpy(array) for name, array in weights.items()})


def shapes(weights: Weights) -> dict[str, tuple[int, ...]]:
    return {name: tuple(array.shape) for name, array in weights.items()}


def encoding_fingerprint(preprocessing: dict) -> str:
    """What the student's input columns mean (features, categories, bins per numeric, their order):
    weights trained under another encoding may have the same shapes and still mean something else.
    Bin edges, like means, move from fit to fit without changing what a column stands for."""
    meaning = {"order": preprocessing["feature_order"],
               "categories": {c["name"]: c["categories"] for c in preprocessing["categorical"]},
               "bins": {n["name"]: max(len(n.get("edges", ())) - 1, 0) for n in preprocessing["numeric"]}}
    return hashlib.sha256(json.dumps(meaning, sort_keys=True).encode()).hexdigest()[:16]


def check_compatible(start: Weights, model: StudentMLP, who: str) -> None:
    """``start`` fits ``model``, or a ValueError that says why (the features' categories changed)."""
    expected = shapes(weights_of(model))
    if shapes(start) != expected:
        raise ValueError(f"{who}: the weights to start from have shapes {shapes(start)}, this student needs {expected} "
                         "(the features' categories changed since they were trained?)")


@dataclass
class Student:
    model: StudentMLP
    architecture: dict
    history: list[dict]
    start: str = "scratch"
    """Where training started: ``scratch`` or the federated weights it was initialised from."""
    hyperparameters: dict = field(default_factory=dict)
    """The spec it was fitted with (after the policy's adaptation), for the registry's lineage."""
    quantize_first_layer: bool = False
    """Whether its int8 model quantizes the first layer too (``pipeline.quantize``: fp32 unless the
    student search chose otherwise)."""
    search: dict = field(default_factory=dict)
    """The student search's chosen point and why, when a search chose this shape; empty otherwise."""
    alpha_choice: dict = field(default_factory=dict)
    """Which distillation weight it was trained with and why (``pipeline.distillation_weight``)."""
    refit: dict = field(default_factory=dict)
    """The rows and epochs of its refit on training and validation rows (``refit_with_validation``), and
    the rounds of the teacher refitted on them for it (None: its teacher as trained); empty when it
    learned from the training rows alone. ``history`` is the early-stopped fit's."""

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        self.model.eval()
        with torch.no_grad():
            return torch.softmax(self.model(torch.from_numpy(matrix)), dim=1).numpy()

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(directory / WEIGHTS_FILE) as tmp:
            torch.save(self.model.state_dict(), tmp)
        meta = {**self.architecture, "history": self.history, "start": self.start, "hyperparameters": self.hyperparameters,
                "quantize_first_layer": self.quantize_first_layer, "search": self.search, "alpha_choice": self.alpha_choice,
                "refit": self.refit}
        atomic.write_text(directory / ARCHITECTURE_FILE, json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path) -> "Student":
        meta = json.loads((directory / ARCHITECTURE_FILE).read_text(encoding="utf-8"))
        model = StudentMLP(meta["input_width"], tuple(meta["hidden"]), meta["n_classes"])
        model.load_state_dict(torch.load(directory / WEIGHTS_FILE, weights_only=True))
        model.eval()
        return cls(model, {k: meta[k] for k in ("input_width", "hidden", "n_classes")}, meta["history"], meta.get("start", "scratch"),
                   meta.get("hyperparameters", {}), meta.get("quantize_first_layer", False), meta.get("search", {}),
                   meta.get("alpha_choice", {}), meta.get("refit", {}))


TRANSFER_ROWS = {
    "labelled": (pl.col(SPLIT) == TRAIN) & (pl.col(PROVENANCE) != AUGMENTED),
    "unlabelled": pl.col(SPLIT) == UNLABELLED,
    "augmented": (pl.col(SPLIT) == TRAIN) & (pl.col(PROVENANCE) == AUGMENTED),
}


def transfer_set(training_set: pl.DataFrame, spec: StudentSpec) -> pl.DataFrame:
    """The rows the student learns from, of the kinds ``spec.transfer`` names."""
    keep = pl.lit(False)
    for kind in spec.transfer:
        keep = keep | TRANSFER_ROWS[kind]
    return training_set.filter(keep)


def unseen_category_copies(transfer: pl.DataFrame, categorical: list[str], share: float, seed: int) -> pl.DataFrame:
    """Copies of a ``share`` of the labelled rows with categorical inputs blanked (each with probability
    0.5, at least one per row), as unlabelled rows: the teacher's scores on them teach the student what a
    category it never saw means (see ``StudentSpec.unseen_category_copies``)."""
    labelled = transfer.filter(TRANSFER_ROWS["labelled"])
    if not categorical or share <= 0 or not labelled.height:
        return transfer.head(0)
    copies = labelled.sample(fraction=share, seed=seed)
    rng = np.random.default_rng(seed)
    blank = rng.random((copies.height, len(categorical))) < 0.5
    blank[np.arange(copies.height), rng.integers(0, len(categorical), copies.height)] = True
    return copies.with_columns(
        *(pl.when(pl.Series(blank[:, i])).then(None).otherwise(pl.col(name)).alias(name) for i, name in enumerate(categorical)),
        pl.lit(UNLABELLED).alias(SPLIT),
    )


def transfer_counts(training_set: pl.DataFrame, spec: StudentSpec) -> dict[str, int]:
    return {kind: training_set.filter(TRANSFER_ROWS[kind]).height for kind in spec.transfer}


@dataclass(frozen=True)
class StudentData:
    """Encoded rows with the teacher's softened scores, hard labels (``NO_LABEL`` where none) and
    the weight of each row's label."""

    x: torch.Tensor
    soft: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor

    @classmethod
    def of(cls, x: np.ndarray, teacher_scores: np.ndarray, labels: np.ndarray, temperature: float,
           weights: np.ndarray | None = None) -> "StudentData":
        weights = np.ones(len(x)) if weights is None else weights
        return cls(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(soft_targets(teacher_scores, temperature)),
                   torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(weights.astype(np.float32)))

    def __len__(self) -> int:
        return len(self.x)

    def rows(self, index: torch.Tensor) -> "StudentData":
        return StudentData(self.x[index], self.soft[index], self.labels[index], self.weights[index])


def student_data(frame: pl.DataFrame, teacher: Teacher, config: DatasetConfig, spec: StudentSpec,
                 labelled: pl.Expr = pl.col(SPLIT) != UNLABELLED) -> StudentData:
    """``frame`` encoded for the student and scored by the teacher; rows outside ``labelled`` carry
    no hard label."""
    has_label = frame.select(labelled.fill_null(False)).to_series().to_numpy()
    codes = np.where(has_label, label_codes(frame, config.classes), NO_LABEL)
    weights = frame[WEIGHT].fill_null(1.0).to_numpy() if WEIGHT in frame.columns else None
    scores = teacher.raw_scores(frame) if frame.height else np.empty((0, len(teacher.classes)))
    return StudentData.of(student_matrix(frame, teacher.preprocessing).reshape(frame.height, teacher.preprocessing["input_width"]), scores, codes,
                          spec.temperature, weights)


def soft_targets(teacher_scores: np.ndarray, temperature: float) -> np.ndarray:
    scaled = teacher_scores / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def distillation_loss(model: StudentMLP, data: StudentData, spec: StudentSpec) -> torch.Tensor:
    T, alpha = spec.temperature, spec.alpha
    logits = model(data.x)
    kd = F.kl_div(F.log_softmax(logits / T, dim=1), data.soft, reduction="batchmean") * T * T
    has_label = data.labels >= 0
    if has_label.any():
        per_row = F.cross_entropy(logits[has_label], data.labels[has_label], reduction="none")
        weights = data.weights[has_label]
        ce = (per_row * weights).sum() / weights.sum()
    else:
        ce = logits.sum() * 0
    return alpha * kd + (1 - alpha) * ce


def proximal_term(model: StudentMLP, anchor: list[torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx: (mu / 2) * ||w - w_anchor||^2, which keeps a site's update near the global weights."""
    # sum() starts from the int 0, so its type admits an int; over the model's parameters it is a tensor
    return cast(torch.Tensor, mu / 2 * sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor)))


def new_model(input_width: int, n_classes: int, spec: StudentSpec, seed: int) -> StudentMLP:
    torch.manual_seed(seed)
    return StudentMLP(input_width, spec.hidden, n_classes)


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread for the duration: the student's matrices are too small to split, and on a
    shared two-core machine a second thread made each optimiser step 2-3x slower (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_epochs(model: StudentMLP, train: StudentData, validation: StudentData, spec: StudentSpec, epochs: int,
                 seed: int, proximal_mu: float = 0.0, patience: int | None = None) -> list[dict]:
    """Train ``model`` in place for at most ``epochs``, keeping the epoch with the best validation loss
    (an empty validation set keeps the last); returns the learning curve. ``patience``: stop once that
    many epochs in a row did not improve on the best validation loss. ``proximal_mu`` > 0 adds the
    FedProx term anchored at the weights ``model`` starts from."""
    optimiser = torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
    generator = torch.Generator().manual_seed(seed)
    anchor = [p.detach().clone() for p in model.parameters()]
    best_loss, best_state, best_epoch, history = float("inf"), copy.deepcopy(model.state_dict()), 0, []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        total = 0.0
        for start in range(0, len(order), spec.batch_size):
            batch = train.rows(order[start:start + spec.batch_size])
            loss = distillation_loss(model, batch, spec)
            if proximal_mu > 0:
                loss = loss + proximal_term(model, anchor, proximal_mu)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        val_loss = validation_loss(model, validation, spec)
        history.append({"epoch": epoch + 1, "train_loss": total / max(len(order), 1), "validation_loss": val_loss})
        if len(validation) == 0 or val_loss < best_loss:
            best_loss, best_state, best_epoch = val_loss, copy.deepcopy(model.state_dict()), epoch + 1
        elif patience is not None and epoch + 1 - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return history


def validation_loss(model: StudentMLP, data: StudentData, spec: StudentSpec) -> float:
    if len(data) == 0:
        return float("nan")
    model.eval()
    with torch.no_grad():
        return float(distillation_loss(model, data, spec))


def fit_student(training_set: pl.DataFrame, teacher: Teacher, config: DatasetConfig, spec: StudentSpec | None = None,
                start: tuple[str, Weights] | None = None) -> Student:
    """Distil ``teacher`` into a student on the transfer set, validated on the validation rows.
    ``spec`` overrides the configured one (see ``adapted_spec``);
    ``start`` (a name and weights, e.g. the federated global model) replaces the random start when
    its shapes fit, and the student records which start it had."""
    spec = spec or config.training.student
    transfer = transfer_set(training_set, spec)
    categorical = [f.name for f in config.categorical_features]
    transfer = pl.concat([transfer, unseen_category_copies(transfer, categorical, spec.unseen_category_copies, config.training.seed)])
    train = student_data(transfer, teacher, config, spec)
    validation = student_data(training_set.filter(pl.col(SPLIT) == VALIDATION), teacher, config, spec)
    seed = config.training.seed
    model = new_model(train.x.shape[1], train.soft.shape[1], spec, seed)
    started = "scratch"
    if start is not None:
        name, weights = start
        try:
            check_compatible(weights, model, "student")
            load_weights(model, weights)
            started = name
        except ValueError as exc:
            started = f"scratch: {name} does not fit ({exc})"
    with one_thread():
        history = train_epochs(model, train, validation, spec, spec.epochs, seed, patience=spec.patience)
    return Student(model, architecture(model), history, started, spec.model_dump(mode="json"))


def refit_with_validation(student: Student, training_set: pl.DataFrame, teacher: Teacher, config: DatasetConfig,
                          spec: StudentSpec, start: tuple[str, Weights] | None = None, refit_teacher: bool = False) -> Student:
    """``student`` fitted again, from its start, on the training and validation rows for the epochs its
    early stopping kept (``spec.refit_with_validation``); ``student`` itself when that is off or nothing
    was held out. Its alpha and the choice of it carry over. With ``refit_teacher`` (a teacher trained
    on the window, not an incremental update of an older one) and an alpha above 0, it distils the
    teacher refitted on the same rows for its kept rounds (``pipeline.teacher.refitted_on``): the
    student of alpha 0.9 learns the validation rows through its teacher too. The choices stay those
    made with the early-stopped teacher, which never saw the rows they were judged on."""
    validation_rows = int((training_set[SPLIT] == VALIDATION).sum())
    if not spec.refit_with_validation or validation_rows == 0:
        return student
    epochs = best_epoch(student.history)
    merged = training_set.with_columns(pl.when(pl.col(SPLIT) == VALIDATION).then(pl.lit(TRAIN)).otherwise(pl.col(SPLIT)).alias(SPLIT))
    alpha = float(student.hyperparameters.get("alpha", spec.alpha))
    refitted_teacher = (refitted_on(teacher, merged.filter(pl.col(SPLIT) == TRAIN), config.training.seed)
                        if refit_teacher and alpha > 0 else None)
    refitted = fit_student(merged, refitted_teacher or teacher, config, spec.model_copy(update={"alpha": alpha, "epochs": epochs}), start)
    teacher_rounds = refitted_teacher.booster.current_iteration() if refitted_teacher else None
    return replace(refitted, history=student.history, hyperparameters=student.hyperparameters, alpha_choice=student.alpha_choice,
                   refit={"validation_rows": validation_rows, "epochs": epochs, "teacher_rounds": teacher_rounds})


def best_epoch(history: list[dict]) -> int:
    """The epoch early stopping kept: the best validation loss (the last epoch when none was measured)."""
    measured = [h for h in history if not np.isnan(h["validation_loss"])]
    return min(measured, key=lambda h: h["validation_loss"])["epoch"] if measured else history[-1]["epoch"]


def held_out_rows(training_set: pl.DataFrame, student: Student) -> pl.DataFrame:
    """The labelled rows ``student`` never learned from, for its checks after training (int8 against
    fp32, calibration): the validation split, or the test split once the refit learned from validation."""
    return training_set.filter(pl.col(SPLIT) == (TEST if student.refit else VALIDATION))


def adapted_spec(training_set: pl.DataFrame, config: DatasetConfig, adapted: dict) -> StudentSpec:
    """The configured student with the retraining policy's batch size and epochs (``adapted``) or,
    when the policy could not size them (a first model: no drift report yet, so no idea of the
    volume), sized to this transfer set. Never the small-data maximum for a large window: that made
    a first student on 14,000 rows run 40 epochs of batch 64."""
    spec = config.training.student
    if not adapted:
        rows = transfer_set(training_set, spec).height
        adapted = student_schedule(rows, config.feedback.policy.student_steps)
    return StudentSpec.model_validate({**spec.model_dump(), **adapted})


def architecture(model: StudentMLP) -> dict:
    linear = [m for m in model.net if isinstance(m, nn.Linear)]
    return {"input_width": linear[0].in_features, "hidden": [m.out_features for m in linear[:-1]],
            "n_classes": linear[-1].out_features}
