"""The teacher boosted again on more rows for the rounds its early stopping kept."""

import numpy as np
import polars as pl

from pipeline.teacher import Teacher, fit_teacher, refitted_on
from pipeline.training_set import SPLIT, TRAIN, VALIDATION


def test_a_refitted_teacher_keeps_its_rounds_parameters_and_encoding_and_learns_the_new_rows(trained, tmp_path):
    config, frame = trained.config, trained.frame
    small_leaves = config.model_copy(update={"training": config.training.model_copy(
        update={"teacher": config.training.teacher.model_copy(update={"num_leaves": 5})})})
    teacher = fit_teacher(frame, small_leaves)
    rows = frame.filter(pl.col(SPLIT).is_in([TRAIN, VALIDATION]))
    # the configured spec says 31 leaves: the refit reads the parameters the teacher was trained with
    refitted = refitted_on(teacher, rows, config.training.seed)
    assert refitted.booster.current_iteration() == teacher.booster.best_iteration > 0
    assert refitted.booster.params["num_leaves"] == 5 and refitted.preprocessing is teacher.preprocessing
    assert max(tree["num_leaves"] for tree in refitted.booster.dump_model()["tree_info"]) <= 5
    # boosted on the validation rows too, so it scores them differently from the early-stopped teacher
    validation = frame.filter(pl.col(SPLIT) == VALIDATION)
    assert not np.allclose(refitted.predict_proba(validation), teacher.predict_proba(validation), atol=1e-3)
    # read back from its files, as the student asset loads it (only the kept rounds, no best iteration): the same refit
    teacher.save(tmp_path)
    loaded = refitted_on(Teacher.load(tmp_path), rows, config.training.seed)
    assert loaded.booster.current_iteration() == refitted.booster.current_iteration()
    assert np.allclose(loaded.predict_proba(validation), refitted.predict_proba(validation))
