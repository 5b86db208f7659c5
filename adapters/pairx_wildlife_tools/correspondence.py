"""Where PAIR-X's match lines land, scored against a known geometric correspondence.

For a pair of synthetic sightings the map from query input pixels to candidate input pixels is known
(:meth:`SyntheticSet.query_to_candidate`). A match line joins a query cell centre to a candidate cell
centre; it *lands* when the true image of the query point lies within one feature cell (Euclidean
distance <= the cell's side, in candidate input pixels) of the line's candidate end.

For two different animals there is no true correspondence of markings; both bodies are drawn in the
same canonical frame, so the same map gives "the same place on the body", and the share measures
how geometrically consistent the lines of a wrong match are.

A baseline with the same points: pair each line's true target with the candidate ends of the *other*
lines of the same explanation (all derangements averaged), i.e. how often a line would land by
chance given where the candidate ends cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pairx_plugin.errors import InvalidInputError


@dataclass(frozen=True)
class LineScore:
    """Per explained match: how many of its top lines land (and the chance baseline)."""

    query_id: str
    candidate_id: str
    same_identity: bool
    lines: int
    landed: int
    baseline: float  # expected landed lines under shuffling of candidate ends

    @property
    def share(self) -> float:
        return self.landed / self.lines if self.lines else float("nan")


@dataclass(frozen=True)
class CorrespondenceSummary:
    """Shares of landed lines, pooled over all lines of correct / incorrect matches."""

    correct_share: float | None
    correct_lines: int
    correct_matches: int
    incorrect_share: float | None
    incorrect_lines: int
    incorrect_matches: int
    correct_baseline: float | None
    incorrect_baseline: float | None


def _apply(homography: np.ndarray, points: np.ndarray) -> np.ndarray:
    ones = np.ones((points.shape[0], 1))
    mapped = np.hstack([points, ones]) @ homography.T
    return mapped[:, :2] / mapped[:, 2:3]


def landed_lines(
    query_xy: np.ndarray, candidate_xy: np.ndarray, query_to_candidate: np.ndarray, cell_size: float
) -> tuple[np.ndarray, float]:
    """Boolean per line (lands within ``cell_size``) and the shuffled-ends baseline count.

    query_xy / candidate_xy: (n, 2) continuous input-pixel coordinates (x, y) as in the artifact,
    where pixel i spans [i, i+1); the homography works on pixel-centre indices, hence the 0.5 shift.
    """
    query_xy = np.asarray(query_xy, float).reshape(-1, 2)
    candidate_xy = np.asarray(candidate_xy, float).reshape(-1, 2)
    if query_xy.shape != candidate_xy.shape:
        raise InvalidInputError(
            f"query points {query_xy.shape} and candidate points {candidate_xy.shape} must pair up one to one"
        )
    if not cell_size > 0:
        raise InvalidInputError(f"cell_size={cell_size!r} must be a positive number of pixels")
    if len(query_xy) == 0:
        return np.zeros(0, bool), 0.0
    target = _apply(query_to_candidate, query_xy - 0.5) + 0.5
    distance = np.linalg.norm(target[:, None, :] - candidate_xy[None, :, :], axis=2)  # (true, end)
    within = distance <= cell_size
    hits = np.diag(within).copy()
    n = len(hits)
    baseline = float((within.sum() - hits.sum()) / (n - 1)) if n > 1 else float(hits.sum())
    return hits, baseline


def summarise(scores: Sequence[LineScore]) -> CorrespondenceSummary:
    def pooled(group: list[LineScore]) -> tuple[float | None, int, float | None]:
        lines = sum(s.lines for s in group)
        if lines == 0:
            return None, 0, None
        return sum(s.landed for s in group) / lines, lines, sum(s.baseline for s in group) / lines

    correct = [s for s in scores if s.same_identity]
    incorrect = [s for s in scores if not s.same_identity]
    c_share, c_lines, c_base = pooled(correct)
    i_share, i_lines, i_base = pooled(incorrect)
    return CorrespondenceSummary(c_share, c_lines, len(correct), i_share, i_lines, len(incorrect), c_base, i_base)
