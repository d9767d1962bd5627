"""The student: a small torch MLP distilled from the teacher, small enough for a modem's CPU.

Distillation loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy on gold
labels, where ``_T`` means softmax of scores divided by the temperature T. The transfer set is the
labelled training rows plus the unlabelled rows of the window: the teacher's soft labels are what
make the unlabelled rows useful. The epoch kept is the one with the best validation loss.
"""

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import polars as pl

from pipeline import atomic
from pipeline.dataset import DatasetConfig, StudentSpec
from pipeline.encoding import NO_LABEL, label_codes, student_matrix
from pipeline.teacher import Teacher
from pipeline.training_set import SPLIT, TRAIN, UNLABELLED, VALIDATION

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


@dataclass
class Student:
    model: StudentMLP
    architecture: dict
    history: list[dict]

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        self.model.eval()
        with torch.no_grad():
            return torch.softmax(self.model(torch.from_numpy(matrix)), dim=1).numpy()

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(directory / WEIGHTS_FILE) as tmp:
            torch.save(self.model.state_dict(), tmp)
        atomic.write_text(directory / ARCHITECTURE_FILE, json.dumps({**self.architecture, "history": self.history}, indent=2))

    @classmethod
    def load(cls, directory: Path) -> "Student":
        meta = json.loads((directory / ARCHITECTURE_FILE).read_text(encoding="utf-8"))
        model = StudentMLP(meta["input_width"], tuple(meta["hidden"]), meta["n_classes"])
        model.load_state_dict(torch.load(directory / WEIGHTS_FILE, weights_only=True))
        model.eval()
        return cls(model, {k: meta[k] for k in ("input_width", "hidden", "n_classes")}, meta["history"])


def soft_targets(teacher_scores: np.ndarray, temperature: float) -> np.ndarray:
    scaled = teacher_scores / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def distill(x: np.ndarray, teacher_scores: np.ndarray, labels: np.ndarray,
            x_val: np.ndarray, teacher_scores_val: np.ndarray, labels_val: np.ndarray,
            spec: StudentSpec, seed: int) -> Student:
    """Train the student on the transfer set ``x``; ``labels`` is ``NO_LABEL`` (-1) where a row has none."""
    torch.manual_seed(seed)
    n_classes = teacher_scores.shape[1]
    model = StudentMLP(x.shape[1], spec.hidden, n_classes)
    optimiser = torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
    T, alpha = spec.temperature, spec.alpha
    data = [torch.from_numpy(a) for a in (x, soft_targets(teacher_scores, T), labels.astype(np.int64))]
    val = [torch.from_numpy(a) for a in (x_val, soft_targets(teacher_scores_val, T), labels_val.astype(np.int64))]
    generator = torch.Generator().manual_seed(seed)

    def loss_of(xb, soft, yb, model_):
        logits = model_(xb)
        kd = F.kl_div(F.log_softmax(logits / T, dim=1), soft, reduction="batchmean") * T * T
        has_label = yb >= 0
        ce = F.cross_entropy(logits[has_label], yb[has_label]) if has_label.any() else logits.sum() * 0
        return alpha * kd + (1 - alpha) * ce

    best_loss, best_state, history = float("inf"), None, []
    for epoch in range(spec.epochs):
        model.train()
        order = torch.randperm(len(data[0]), generator=generator)
        total = 0.0
        for start in range(0, len(order), spec.batch_size):
            idx = order[start:start + spec.batch_size]
            loss = loss_of(*(d[idx] for d in data), model)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(idx)
        model.eval()
        with torch.no_grad():
            val_loss = float(loss_of(*val, model))
        history.append({"epoch": epoch + 1, "train_loss": total / len(order), "validation_loss": val_loss})
        if val_loss < best_loss:
            best_loss, best_state = val_loss, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return Student(model, {"input_width": x.shape[1], "hidden": list(spec.hidden), "n_classes": n_classes}, history)


def fit_student(training_set: pl.DataFrame, teacher: Teacher, config: DatasetConfig, spec: StudentSpec | None = None) -> Student:
    """Distil ``teacher`` into a student on the train and unlabelled rows, validated on validation;
    ``spec`` overrides the configured one (the retraining policy adapts batch size and epochs)."""
    transfer = training_set.filter(pl.col(SPLIT).is_in([TRAIN, UNLABELLED]))
    validation = training_set.filter(pl.col(SPLIT) == VALIDATION)
    hard = np.where(transfer[SPLIT].to_numpy() == TRAIN, label_codes(transfer, config.classes), NO_LABEL)
    return distill(
        student_matrix(transfer, teacher.preprocessing), teacher.raw_scores(transfer), hard,
        student_matrix(validation, teacher.preprocessing), teacher.raw_scores(validation),
        label_codes(validation, config.classes), spec or config.training.student, config.training.seed,
    )
