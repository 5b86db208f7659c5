"""Relevance-weighted geometric verification of a set of matches (deterministic, numpy only).

A correct match of two photos of one animal maps the animal's cells by one smooth transform; a
look-alike or a scene match rarely does for the *relevant* cells. We fit a similarity transform
(rotation, uniform scale, translation: 4 degrees of freedom, no reflection) to the matched cell
centres by an exhaustive weighted RANSAC: every pair of matches proposes a transform, the proposal
whose inliers carry the most weight wins, and its inliers are refitted by weighted least squares.
With at most a few dozen matches (``k_lines``) trying every pair costs under a millisecond and
needs no random seed.

Points may be in any unit (the evidence score uses input pixels); the threshold is in the same unit
(the evidence score passes ``INLIER_CELLS`` feature cells of the layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: a match is an inlier when the transform puts its query end within this many feature cells of its candidate end
INLIER_CELLS = 1.5
#: proposals that shrink or grow the animal by more than this factor are not a plausible re-sighting
MAX_SCALE_CHANGE = 3.0


@dataclass(frozen=True)
class GeometricFit:
    """The best similarity transform and which matches agree with it."""

    matrix: np.ndarray  # (2, 3): candidate = matrix[:, :2] @ query + matrix[:, 2]
    inliers: np.ndarray  # (n,) bool
    residuals: np.ndarray  # (n,) distance in cells after the transform

    @property
    def scale(self) -> float:
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))


def _similarity_from_two(p: np.ndarray, q: np.ndarray) -> np.ndarray | None:
    """The similarity mapping p[0] -> q[0] and p[1] -> q[1] (complex-number form), None if degenerate."""
    zp = complex(*(p[1] - p[0]))
    zq = complex(*(q[1] - q[0]))
    if abs(zp) < 1e-9 or abs(zq) < 1e-9:
        return None
    a = zq / zp  # rotation and scale as one complex factor
    t = complex(*q[0]) - a * complex(*p[0])
    return np.array([[a.real, -a.imag, t.real], [a.imag, a.real, t.imag]])


def fit_similarity(p: np.ndarray, q: np.ndarray, weights: np.ndarray) -> np.ndarray | None:
    """Weighted least-squares similarity ``q ≈ s R p + t`` (Umeyama without reflection); None if degenerate."""
    w = np.asarray(weights, float)
    if w.sum() <= 0 or len(p) < 2:
        return None
    w = w / w.sum()
    mp, mq = w @ p, w @ q
    pc, qc = p - mp, q - mq
    var = float(w @ (pc**2).sum(axis=1))
    if var < 1e-12:
        return None
    cov = (qc * w[:, None]).T @ pc
    u, sing, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    sign = np.diag([1.0, d])
    rotation = u @ sign @ vt
    scale = float((sing * np.diag(sign)).sum() / var)
    if scale <= 0:
        return None
    translation = mq - scale * rotation @ mp
    return np.hstack([scale * rotation, translation[:, None]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _plausible(matrix: np.ndarray) -> bool:
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    return 1.0 / MAX_SCALE_CHANGE <= scale <= MAX_SCALE_CHANGE


def weighted_ransac(p: np.ndarray, q: np.ndarray, weights: np.ndarray, threshold: float) -> GeometricFit | None:
    """Best similarity over all two-match proposals, by inlier weight; None under two usable matches.

    p, q: (n, 2) query and candidate points; weights: (n,) non-negative; threshold: inlier distance.
    """
    p = np.asarray(p, float).reshape(-1, 2)
    q = np.asarray(q, float).reshape(-1, 2)
    w = np.clip(np.asarray(weights, float).reshape(-1), 0.0, None)
    n = len(p)
    if n < 2 or (w > 0).sum() < 2:
        return None
    best: tuple[float, int, np.ndarray] | None = None
    for i in range(n):
        for j in range(i + 1, n):
            matrix = _similarity_from_two(p[[i, j]], q[[i, j]])
            if matrix is None or not _plausible(matrix):
                continue
            inliers = np.linalg.norm(_apply(matrix, p) - q, axis=1) <= threshold
            key = (float(w[inliers].sum()), int(inliers.sum()))
            if best is None or key > best[:2]:
                best = (key[0], key[1], matrix)
    if best is None:
        return None
    matrix = best[2]
    for _ in range(2):  # refit on the inliers, then re-collect them
        inliers = np.linalg.norm(_apply(matrix, p) - q, axis=1) <= threshold
        refit = fit_similarity(p[inliers], q[inliers], w[inliers] + 1e-12) if inliers.sum() >= 2 else None
        if refit is None or not _plausible(refit):
            break
        refit_inliers = np.linalg.norm(_apply(refit, p) - q, axis=1) <= threshold
        if w[refit_inliers].sum() < w[inliers].sum():
            break
        matrix = refit
    residuals = np.linalg.norm(_apply(matrix, p) - q, axis=1)
    return GeometricFit(matrix=matrix, inliers=residuals <= threshold, residuals=residuals)


def transfer_agreement(fit: GeometricFit, p: np.ndarray, q: np.ndarray, weights: np.ndarray, threshold: float) -> float:
    """Weight share of another set of matches (same units as the fit) that ``fit`` maps within ``threshold``."""
    w = np.clip(np.asarray(weights, float).reshape(-1), 0.0, None)
    if len(w) == 0 or w.sum() <= 0:
        return 0.0
    residuals = np.linalg.norm(
        _apply(fit.matrix, np.asarray(p, float).reshape(-1, 2)) - np.asarray(q, float).reshape(-1, 2), axis=1
    )
    return float(min(1.0, w[residuals <= threshold].sum() / w.sum()))
