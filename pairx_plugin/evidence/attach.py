"""Put the evidence score of a pair onto the artifact document the hook is about to store."""
from __future__ import annotations

from typing import Any

from .scores import pair_evidence


def attach_evidence(document: Any, pair: Any, layer_key: str, query: Any, candidate: Any) -> Any:
    """``document`` (an ``ExplanationArtifact``) with ``metrics.evidence`` for ``layer_key`` of ``pair``.

    query / candidate: the ``LoadedImage``s; their optional ``foreground`` (mask or box at the display
    size) marks the animal, else the centre prior is used (see :mod:`.foreground`).
    """
    scores = pair_evidence(
        pair,
        query_foreground=getattr(query, "foreground", None),
        candidate_foreground=getattr(candidate, "foreground", None),
        query_display_size=tuple(query.display.shape[:2]),
        candidate_display_size=tuple(candidate.display.shape[:2]),
    )[layer_key]
    metrics = document.metrics.model_copy(update={"evidence": scores})
    return document.model_copy(update={"metrics": metrics})
