"""Plausibility metrics of one explained pair (the IRM and MC of the PAIR-X re-ranking work).

* IRM (inverted residual mean) = 1 / (1 + mean reprojection residual, in input pixels, of all
  mutual matches under a RANSAC homography (OpenCV, 5 px threshold) fitted to the matched cell
  centres). None with fewer than 4 matches or when no homography is found.
* MC (match coverage) = mean relevance of the top ``k_lines`` matches (0.0 without matches).
* inlier ratio = share of all mutual matches that are RANSAC inliers.
* match count = number of mutual matches.

RANSAC is seeded, so the metrics are deterministic.
"""

from __future__ import annotations

import numpy as np

from .results import PairMetrics

RANSAC_THRESHOLD_PX = 5.0


def pair_metrics(points0: np.ndarray, points1: np.ndarray, relevance: np.ndarray, k_lines: int) -> PairMetrics:
    """Metrics from all mutual matches: pixel centres (n, 2) each, relevance (n,) sorted descending."""
    n = len(relevance)
    mc = float(np.mean(relevance[:k_lines])) if n else 0.0
    if n < 4:
        return PairMetrics(irm=None, mc=mc, inlier_ratio=None, match_count=n)
    import cv2

    src = np.asarray(points0, dtype=np.float32).reshape(-1, 1, 2)
    dst = np.asarray(points1, dtype=np.float32).reshape(-1, 1, 2)
    cv2.setRNGSeed(0)
    homography, mask = cv2.findHomography(src, dst, cv2.RANSAC, RANSAC_THRESHOLD_PX)
    if homography is None:
        return PairMetrics(irm=None, mc=mc, inlier_ratio=None, match_count=n)
    projected = cv2.perspectiveTransform(src, homography)
    residual = float(np.sqrt(((projected - dst) ** 2).sum(axis=2)).mean())
    inliers = float(mask.astype(bool).mean()) if mask is not None else None
    return PairMetrics(irm=1.0 / (1.0 + residual), mc=mc, inlier_ratio=inliers, match_count=n)
