"""Plain result objects returned by the engine (numpy arrays, no torch tensors).

These are the engine's output; ``pairx_plugin.artifacts.schema`` turns them into the
versioned JSON documents that curation UIs read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Match:
    """One mutual-nearest-neighbour match between a query cell and a candidate cell.

    Cells are ``(x, y)`` feature-map indices; ``*_xy`` are the cell centres in input pixels,
    ``((x + 0.5) * W / w, (y + 0.5) * H / h)``.
    """

    query_cell: tuple[int, int]
    candidate_cell: tuple[int, int]
    query_xy: tuple[float, float]
    candidate_xy: tuple[float, float]
    relevance: float
    distance: float
    #: Lowe's ratio nearest / second-nearest distance, the larger of both directions (engine.matching.nearest_ratio)
    ratio: float | None = None


@dataclass(frozen=True)
class PairMetrics:
    """Plausibility metrics of one pair at one layer (see docs/engine.md).

    irm: 1 / (1 + mean reprojection residual, in input pixels, of a RANSAC homography (5 px
         threshold, seeded) fitted to the matched cell centres of all mutual matches); None with
         fewer than 4 matches or when no homography is found.
    mc: mean relevance of the top ``k_lines`` matches (0.0 when there are none).
    inlier_ratio: share of all mutual matches that are RANSAC inliers; None under 4 matches.
    match_count: number of mutual nearest-neighbour matches before truncation to k_lines.
    """

    irm: float | None
    mc: float
    inlier_ratio: float | None
    match_count: int


@dataclass
class LayerExplanation:
    """PAIR-X result of one pair at one layer.

    relevance_query / relevance_candidate: (h, w) float32 layer relevance (|R| summed over channels).
    matches: the top ``k_lines`` matches, sorted by relevance descending (ties keep matcher order).
    mutual_matches: every mutual nearest-neighbour match in the same order (``matches`` is its first
        ``k_lines``; at most h × w entries). Kept so that lines can be chosen after the engine where
        the animal's foreground is known (``pairx_plugin.evidence.lines``); empty when a layer was
        rebuilt from stored data that has only the top matches.
    pixel_relevance_query / pixel_relevance_candidate: (n, H, W) float32, n = min(k_colors,
        len(matches)); map i belongs to matches[i].
    """

    key: str
    relevance_query: np.ndarray
    relevance_candidate: np.ndarray
    matches: list[Match]
    pixel_relevance_query: np.ndarray
    pixel_relevance_candidate: np.ndarray
    metrics: PairMetrics
    mutual_matches: list[Match] = field(default_factory=list)


@dataclass
class PairExplanation:
    """PAIR-X result of one (query, candidate) pair over all requested layers."""

    cosine: float
    layers: dict[str, LayerExplanation]
    query_size: tuple[int, int]  # (H, W) of the query input tensor
    candidate_size: tuple[int, int]
    mode: str  # "conservative" or "parity"
    backend: str  # relevance backend name, e.g. "zennit-lrp" or "gradient-x-input"
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage (informative)
