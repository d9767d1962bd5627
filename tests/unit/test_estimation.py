"""Calibration, estimated performance without labels, and the causes of a drift (issue 19)."""

import numpy as np

from pipeline.calibration import Calibrator, fit_temperature


def _overconfident(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """True probabilities of three classes, and labels drawn from them; the model reports them sharpened."""
    rng = np.random.default_rng(seed)
    truth = rng.dirichlet([1.0, 1.0, 1.0], n)
    labels = np.array([rng.choice(3, p=p) for p in truth])
    return Calibrator(0.5).apply(truth), labels


def test_temperature_scaling_undoes_overconfidence_and_keeps_the_argmax(tmp_path):
    reported, labels = _overconfident(3000)
    calibrator = fit_temperature(reported, labels)
    assert 1.6 < calibrator.temperature < 2.5
    assert (calibrator.apply(reported).argmax(axis=1) == reported.argmax(axis=1)).all()
    calibrator.save(tmp_path / "calibration.json")
    assert Calibrator.load(tmp_path / "calibration.json") == calibrator
    assert Calibrator.load(tmp_path / "missing.json") == Calibrator()  # a version saved before calibration
