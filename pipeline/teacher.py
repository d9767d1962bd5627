"""The teacher: a LightGBM multiclass model, saved in LightGBM's text format (never pickle).

Early stopping watches the validation split only. The preprocessing constants travel with the
model in a JSON sidecar so that anyone loading the text model encodes rows the same way.
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import lightgbm as lgb
import numpy as np
import polars as pl

from pipeline import atomic
from pipeline.dataset import SEARCHED_TEACHER_PARAMS, DatasetConfig, StudentSpec, TeacherSpec
from pipeline.encoding import fit_preprocessing, label_codes, teacher_matrix
from pipeline.features import model_feature_names
from pipeline.training_set import SPLIT, TRAIN, VALIDATION

MODEL_FILE, PREPROCESSING_FILE = "teacher.txt", "preprocessing.json"


@dataclass
class Teacher:
    booster: lgb.Booster
    preprocessing: dict
    classes: tuple[str, ...]

    # Booster.predict is typed for every mode (sparse matrices, lists of them); on a dense matrix it returns an array
    def raw_scores(self, frame: pl.DataFrame) -> np.ndarray:
        return cast(np.ndarray, self.booster.predict(teacher_matrix(frame, self.preprocessing), raw_score=True))

    def predict_proba(self, frame: pl.DataFrame) -> np.ndarray:
        return cast(np.ndarray, self.booster.predict(teacher_matrix(frame, self.preprocessing)))

    def save(self, directory: Path) -> None:
        atomic.write_text(directory / MODEL_FILE, self.booster.model_to_string())
        sidecar = {"preprocessing": self.preprocessing, "classes": list(self.classes)}
        atomic.write_text(directory / PREPROCESSING_FILE, json.dumps(sidecar, indent=2))

    @classmethod
    def load(cls, directory: Path) -> "Teacher":
        sidecar = json.loads((directory / PREPROCESSING_FILE).read_text(encoding="utf-8"))
        booster = lgb.Booster(model_file=str(directory / MODEL_FILE))
        return cls(booster, sidecar["preprocessing"], tuple(sidecar["classes"]))


def lightgbm_params(spec: TeacherSpec, n_classes: int, seed: int) -> dict:
    return {
        "objective": "multiclass", "num_class": n_classes, "learning_rate": spec.learning_rate,
        "num_leaves": spec.num_leaves, "min_data_in_leaf": spec.min_data_in_leaf, "lambda_l2": spec.lambda_l2,
        "feature_fraction": spec.feature_fraction, "seed": seed,
        "deterministic": True, "num_threads": 1, "verbose": -1,
    }


def lightgbm_dataset(frame: pl.DataFrame, preprocessing: dict, classes: tuple[str, ...],
                     reference: lgb.Dataset | None = None) -> lgb.Dataset:
    """Rows as the teacher reads them: raw numerics, category codes flagged categorical, weights."""
    n_numeric = len(preprocessing["numeric"])
    return lgb.Dataset(teacher_matrix(frame, preprocessing), label_codes(frame, classes),
                       weight=frame["weight"].to_numpy(), feature_name=preprocessing["feature_order"],
                       categorical_feature=list(range(n_numeric, n_numeric + len(preprocessing["categorical"]))),
                       reference=reference, free_raw_data=False)


def train_teacher(train: pl.DataFrame, validation: pl.DataFrame, preprocessing: dict,
                  classes: tuple[str, ...], spec: TeacherSpec, seed: int, init_model: lgb.Booster | None = None,
                  callbacks: Sequence[Callable] = ()) -> Teacher:
    """Boost ``spec.rounds`` trees (on top of ``init_model``'s, when continuing), early-stopped on validation.
    ``callbacks`` watch the boosting too (the teacher search's pruning reads the validation loss)."""
    train_set = lightgbm_dataset(train, preprocessing, classes)
    booster = lgb.train(
        lightgbm_params(spec, len(classes), seed), train_set, num_boost_round=spec.rounds,
        valid_sets=[lightgbm_dataset(validation, preprocessing, classes, train_set)],
        callbacks=[lgb.early_stopping(spec.early_stopping_rounds, verbose=False), *callbacks], init_model=init_model,
    )
    return Teacher(booster, preprocessing, classes)


def teacher_preprocessing(train: pl.DataFrame, config: DatasetConfig, student: StudentSpec | None = None) -> dict:
    """The preprocessing a teacher is trained with, fitted on ``train``: its student reads the same
    constants, so the student's bins (``student``, else the config's) are fitted here too."""
    numeric, categorical = model_feature_names(config)
    bins = (student or config.training.student).bins_per_numeric(len(numeric))
    return fit_preprocessing(train, numeric, categorical, bins)


def fit_teacher(training_set: pl.DataFrame, config: DatasetConfig) -> Teacher:
    """Fit preprocessing on the train split and train the teacher, early-stopped on validation."""
    train = training_set.filter(pl.col(SPLIT) == TRAIN)
    validation = training_set.filter(pl.col(SPLIT) == VALIDATION)
    return train_teacher(train, validation, teacher_preprocessing(train, config), config.classes, config.training.teacher,
                         config.training.seed)


def production_params(booster: lgb.Booster) -> dict:
    """The searched parameters a teacher was trained with, as LightGBM saved them in its model file
    (floats to 6 significant digits)."""
    return {name: booster.params[name] for name in SEARCHED_TEACHER_PARAMS}


def refitted_on(teacher: Teacher, rows: pl.DataFrame, seed: int) -> Teacher:
    """``teacher`` boosted again from scratch on ``rows`` (its training and validation rows) for the
    rounds its early stopping kept, with the parameters it was trained with (a search's, where one ran)
    and its preprocessing, so its student's encoding is unchanged. On a change day's 1,000 rows the
    extra 15% lifted the teacher from 0.890 to 0.914 the next day (``pipeline.student.refit_with_validation``).
    A booster read from its file holds only the kept rounds; one still in memory knows its best."""
    booster = teacher.booster
    rounds = booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()
    trained_with = TeacherSpec.model_validate(production_params(booster))
    refitted = lgb.train(lightgbm_params(trained_with, len(teacher.classes), seed),
                         lightgbm_dataset(rows, teacher.preprocessing, teacher.classes), num_boost_round=rounds)
    return Teacher(refitted, teacher.preprocessing, teacher.classes)
