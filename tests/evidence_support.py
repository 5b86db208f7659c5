"""Builders of engine results with known geometry for the evidence tests (no model needed)."""

from __future__ import annotations

import numpy as np

from pairx_plugin.engine.results import (
    LayerExplanation,
    Match,
    PairExplanation,
    PairMetrics,
)

SIZE = 224
GRID = 14  # 16-px cells
CELL = SIZE / GRID


def centre(cell: tuple[int, int]) -> tuple[float, float]:
    return ((cell[0] + 0.5) * CELL, (cell[1] + 0.5) * CELL)


def layer_from_cells(
    pairs: list[tuple[tuple[int, int], tuple[int, int]]],
    relevance: list[float] | None = None,
    ratio: list[float] | None = None,
    key: str = "blocks.3",
    grid: int = GRID,
) -> LayerExplanation:
    """A LayerExplanation whose matches join the given (query cell, candidate cell) pairs."""
    relevance = relevance or [1.0] * len(pairs)
    ratio = ratio or [0.8] * len(pairs)
    cell = SIZE / grid
    matches = [
        Match(
            query_cell=q,
            candidate_cell=c,
            query_xy=((q[0] + 0.5) * cell, (q[1] + 0.5) * cell),
            candidate_xy=((c[0] + 0.5) * cell, (c[1] + 0.5) * cell),
            relevance=float(r),
            distance=1.0,
            ratio=float(p),
        )
        for (q, c), r, p in zip(pairs, relevance, ratio)
    ]
    order = np.argsort([-m.relevance for m in matches], kind="stable")
    matches = [matches[i] for i in order]
    return LayerExplanation(
        key=key,
        relevance_query=np.ones((grid, grid), np.float32),
        relevance_candidate=np.ones((grid, grid), np.float32),
        matches=matches,
        pixel_relevance_query=np.zeros((0, SIZE, SIZE), np.float32),
        pixel_relevance_candidate=np.zeros((0, SIZE, SIZE), np.float32),
        metrics=PairMetrics(
            irm=None, mc=float(np.mean(relevance)) if relevance else 0.0, inlier_ratio=None, match_count=len(matches)
        ),
    )


def pair_of(*layers: LayerExplanation, cosine: float = 0.5) -> PairExplanation:
    return PairExplanation(
        cosine=cosine,
        layers={layer.key: layer for layer in layers},
        query_size=(SIZE, SIZE),
        candidate_size=(SIZE, SIZE),
        mode="conservative",
        backend="zennit-lrp",
    )


def shifted_cells(cells: list[tuple[int, int]], dx: int, dy: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Matches under a pure translation by (dx, dy) cells."""
    return [(c, (c[0] + dx, c[1] + dy)) for c in cells]


def scattered_cells(count: int, seed: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Matches with no common transform: each cell joined to a random other cell."""
    rng = np.random.default_rng(seed)
    return [((int(a), int(b)), (int(c), int(d))) for a, b, c, d in rng.integers(0, GRID, size=(count, 4))]
