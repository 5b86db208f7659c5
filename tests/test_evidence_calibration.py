"""Isotonic (pool-adjacent-violators) and logistic calibration, against scikit-learn where installed."""

from __future__ import annotations

import numpy as np
import pytest

from pairx_plugin.errors import ConfigError, InvalidInputError
from pairx_plugin.evidence.calibration import (
    Calibration,
    fit_calibration,
    load_calibration,
    pool_adjacent_violators,
)


def data(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = np.round(rng.uniform(0, 1, n), 2)
    labels = rng.random(n) < scores**2
    return scores, labels


def test_pool_adjacent_violators_is_monotone_and_keeps_the_mean():
    y = np.array([1.0, 3.0, 2.0, 2.0, 0.0, 5.0])
    fitted = pool_adjacent_violators(y)
    assert np.all(np.diff(fitted) >= 0)
    assert fitted.mean() == pytest.approx(y.mean())
    assert fitted.tolist() == pytest.approx([1.0, 1.75, 1.75, 1.75, 1.75, 5.0])


@pytest.mark.parametrize("seed", [0, 1])
def test_isotonic_matches_scikit_learn(seed):
    isotonic = pytest.importorskip("sklearn.isotonic", reason="scikit-learn is not installed")
    scores, labels = data(seed)
    calibration = fit_calibration(scores, labels, method="isotonic")
    reference = isotonic.IsotonicRegression(out_of_bounds="clip").fit(scores, labels.astype(float))
    grid = np.linspace(0, 1, 101)
    assert np.allclose(calibration.predict(grid), reference.predict(grid), atol=1e-9)


def test_logistic_matches_scikit_learn():
    linear = pytest.importorskip("sklearn.linear_model", reason="scikit-learn is not installed")
    scores, labels = data(3)
    calibration = fit_calibration(scores, labels, method="logistic")
    reference = linear.LogisticRegression(C=1e6, tol=1e-10, max_iter=10000).fit(scores[:, None], labels)
    assert calibration.coef == pytest.approx(float(reference.coef_[0, 0]), rel=1e-3)
    assert calibration.intercept == pytest.approx(float(reference.intercept_[0]), rel=1e-3)
    probabilities = calibration.predict([0.0, 0.5, 1.0])
    assert np.all(np.diff(probabilities) > 0)


def test_calibration_round_trips_through_its_file(tmp_path):
    scores, labels = data(4)
    calibration = fit_calibration(scores, labels, method="isotonic", score="evidence")
    loaded = load_calibration(calibration.save(tmp_path / "calibration.json"))
    assert loaded == calibration
    assert np.allclose(loaded.predict(scores), calibration.predict(scores))


def test_bad_calibration_input_and_files(tmp_path):
    with pytest.raises(InvalidInputError, match="correct and incorrect"):
        fit_calibration([0.1, 0.2], [True, True])
    with pytest.raises(InvalidInputError, match="NaN"):
        fit_calibration([0.1, np.nan], [True, False])
    with pytest.raises(ConfigError, match="cannot read"):
        load_calibration(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ConfigError, match="not a calibration file"):
        load_calibration(tmp_path / "bad.json")
    identity = Calibration(score="evidence", method="isotonic", x=[0, 1], y=[0, 1], samples=2, positives=1)
    assert float(identity.predict(0.25)) == 0.25 and float(identity.predict(3.0)) == 1.0  # clipped at the knots
