"""Monotone calibration of a score on a labelled run: isotonic (pool-adjacent-violators) or logistic.

``fit_calibration`` learns P(correct | score) from (score, correct) pairs; the result is a small
JSON file (:class:`Calibration`) that ``pairx.rerank.calibration`` can point to. Both fits are our
own few lines of numpy (no scikit-learn needed at run time); the tests compare them with
scikit-learn's ``IsotonicRegression`` and ``LogisticRegression`` where it is installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError, InvalidInputError

CalibrationMethod = Literal["isotonic", "logistic"]
CALIBRATION_FORMAT = "pairx-calibration/1"


class Calibration(BaseModel):
    """A fitted monotone map score -> probability of a correct match."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["pairx-calibration/1"] = "pairx-calibration/1"
    score: str = Field(description="Which record number was calibrated, e.g. 'evidence'.")
    method: CalibrationMethod
    x: list[float] = Field(default_factory=list, description="isotonic: knot scores, ascending.")
    y: list[float] = Field(default_factory=list, description="isotonic: probability at each knot.")
    coef: float | None = Field(None, description="logistic: slope.")
    intercept: float | None = Field(None, description="logistic: intercept.")
    samples: int = Field(ge=0)
    positives: int = Field(ge=0)

    def predict(self, scores: np.ndarray | list[float] | float) -> np.ndarray:
        values = np.asarray(scores, float)
        if self.method == "isotonic":
            return np.interp(values, self.x, self.y)
        assert self.coef is not None and self.intercept is not None
        return 1.0 / (1.0 + np.exp(-(self.coef * values + self.intercept)))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.model_dump_json(indent=1) + "\n", encoding="utf-8")
        return path


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file; :class:`ConfigError` naming the file when it is missing or not one."""
    path = Path(path)
    try:
        return Calibration.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"pairx.rerank.calibration: cannot read {str(path)!r} ({exc.strerror}); "
            "write it with `pairx-plugin calibrate RUN_DIR`"
        ) from None
    except (ValidationError, ValueError) as exc:
        raise ConfigError(
            f"pairx.rerank.calibration: {str(path)!r} is not a calibration file ({str(exc).splitlines()[0]}); "
            "write it with `pairx-plugin calibrate RUN_DIR`"
        ) from None


def pool_adjacent_violators(y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The non-decreasing sequence closest to ``y`` in weighted least squares (input sorted by score)."""
    y = np.asarray(y, float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, float)
    means: list[float] = []
    masses: list[float] = []
    counts: list[int] = []
    for value, weight in zip(y, w):
        means.append(float(value))
        masses.append(float(weight))
        counts.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            mass = masses[-2] + masses[-1]
            mean = (means[-2] * masses[-2] + means[-1] * masses[-1]) / mass
            count = counts[-2] + counts[-1]
            del means[-1], masses[-1], counts[-1]
            means[-1], masses[-1], counts[-1] = mean, mass, count
    return np.repeat(means, counts)


def _check(scores: np.ndarray, labels: np.ndarray) -> None:
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise InvalidInputError(f"scores {scores.shape} and labels {labels.shape} must be two 1-D arrays of one length")
    if not np.isfinite(scores).all():
        raise InvalidInputError("scores contain NaN or infinite values; drop those records before calibrating")
    positives = int(labels.sum())
    if positives == 0 or positives == len(labels):
        raise InvalidInputError(
            f"calibration needs correct and incorrect records; got {positives} correct of {len(labels)}"
        )


def fit_isotonic(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots (x ascending, unique) and fitted probabilities of the isotonic regression labels ~ scores."""
    order = np.argsort(scores, kind="stable")
    x, y = scores[order], labels[order].astype(float)
    unique, start = np.unique(x, return_index=True)  # tied scores share one mean first
    counts = np.diff(np.append(start, len(x)))
    means = np.add.reduceat(y, start) / counts
    return unique, pool_adjacent_violators(means, counts)


def fit_logistic(
    scores: np.ndarray, labels: np.ndarray, l2: float = 1e-4, iterations: int = 100
) -> tuple[float, float]:
    """Slope and intercept of a one-feature logistic regression (Newton's method, small ridge)."""
    x = np.column_stack([scores, np.ones_like(scores)])
    y = labels.astype(float)
    beta = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ beta)))
        gradient = x.T @ (p - y) + l2 * np.array([beta[0], 0.0])
        hessian = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.diag([1.0, 0.0]) + 1e-12 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(beta[0]), float(beta[1])


def fit_calibration(
    scores: np.ndarray | list[float],
    labels: np.ndarray | list[bool],
    *,
    method: CalibrationMethod = "isotonic",
    score: str = "evidence",
) -> Calibration:
    """A :class:`Calibration` of ``scores`` against boolean ``labels`` (True = correct match)."""
    values = np.asarray(scores, float)
    truth = np.asarray(labels, bool)
    _check(values, truth)
    samples, positives = len(values), int(truth.sum())
    if method == "isotonic":
        x, y = fit_isotonic(values, truth)
        return Calibration(score=score, method=method, x=x.tolist(), y=y.tolist(), samples=samples, positives=positives)
    if method == "logistic":
        coef, intercept = fit_logistic(values, truth)
        return Calibration(
            score=score, method=method, coef=coef, intercept=intercept, samples=samples, positives=positives
        )
    raise InvalidInputError(f"method={method!r}: use 'isotonic' or 'logistic'")


def calibration_text(calibration: Calibration) -> str:
    return json.dumps(calibration.model_dump(mode="json"), indent=1)
