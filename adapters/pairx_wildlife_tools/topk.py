"""Top-k candidates from what wildlife-tools' matching steps return, in both API generations.

0.0.9: ``CosineSimilarity()(q, d)`` returns ``{"cosine": matrix}`` (older 1.x builds used
``{"default": matrix}``); 1.x returns the matrix itself. 1.x ``TopkClassifier(..., return_all=True)``
returns ``(labels, scores, database_indices)``, each ``n_query x k``. Everything here turns those into
:class:`RankedCandidate` rows: query row, database row, 0-based rank, score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pairx_plugin.errors import InvalidInputError

from .host import unwrap_similarity


@dataclass(frozen=True)
class RankedCandidate:
    query_index: int
    database_index: int
    rank: int  # 0 = best (MatchRecord's convention)
    score: float


def similarity_matrix(similarity: Any, key: str | None = None) -> np.ndarray:
    """A 2-D float64 array from a 0.0.9 dict (``{"cosine": m}``), a 1.x array or a torch tensor."""
    similarity = unwrap_similarity(similarity, key)
    if hasattr(similarity, "detach"):
        similarity = similarity.detach().cpu().numpy()
    try:
        matrix = np.asarray(similarity, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"similarity of type {type(similarity).__name__} is not a numeric matrix: {exc}; pass the "
            "output of CosineSimilarity (dict or array)"
        ) from None
    if matrix.ndim != 2:
        raise InvalidInputError(f"similarity must be a 2-D n_query x n_database matrix, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix) | np.isneginf(matrix)):
        raise InvalidInputError("similarity contains NaN or +inf; fix the features before explaining")
    return matrix


def top_k(
    matrix: np.ndarray, k: int, *, query_ids: Sequence[str] | None = None, database_ids: Sequence[str] | None = None
) -> list[RankedCandidate]:
    """The ``k`` best database rows of every query row, best first (stable for equal scores).

    When ids are given, a database row with the query's own id is skipped (with no split every image
    is in both sets; an image matching itself is not a re-identification). ``-inf`` entries, the usual
    way to mask pairs out of a similarity matrix, are never returned.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"k={k!r}: the number of candidates per query must be an integer >= 1")
    n_query, n_database = matrix.shape
    if query_ids is not None and len(query_ids) != n_query:
        raise InvalidInputError(
            f"similarity has {n_query} query rows but the query dataset has {len(query_ids)} images; "
            "pass the dataset the similarity was computed from"
        )
    if database_ids is not None and len(database_ids) != n_database:
        raise InvalidInputError(
            f"similarity has {n_database} database columns but the database dataset has "
            f"{len(database_ids)} images; pass the dataset the similarity was computed from"
        )
    rows: list[RankedCandidate] = []
    for q in range(n_query):
        order = np.argsort(-matrix[q], kind="stable")
        rank = 0
        for d in order:
            if rank == k or np.isneginf(matrix[q, d]):
                break
            if query_ids is not None and database_ids is not None and query_ids[q] == database_ids[d]:
                continue
            rows.append(RankedCandidate(q, int(d), rank, float(matrix[q, d])))
            rank += 1
    return rows


def from_topk_classifier(output: Any) -> list[RankedCandidate]:
    """Rows from 1.x ``TopkClassifier(..., return_all=True)``'s ``(labels, scores, database_indices)``.

    TopkClassifier ranks distinct labels: rank r is the best database image of the r-th best label.
    A ``-inf`` score (a masked pair, e.g. an image against itself) ends its query's row.
    """
    if not isinstance(output, tuple) or len(output) != 3:
        raise InvalidInputError(
            "expected the (predictions, scores, database_indices) tuple of TopkClassifier(return_all=True); "
            f"got {type(output).__name__}; construct the classifier with return_all=True"
        )
    _, scores, indices = (np.asarray(part) for part in output)
    if scores.shape != indices.shape or scores.ndim != 2:
        raise InvalidInputError(
            f"TopkClassifier scores {scores.shape} and indices {indices.shape} must both be n_query x k"
        )
    rows: list[RankedCandidate] = []
    for q in range(indices.shape[0]):
        for r in range(indices.shape[1]):
            if np.isneginf(scores[q, r]):
                break
            rows.append(RankedCandidate(q, int(indices[q, r]), r, float(scores[q, r])))
    return rows
