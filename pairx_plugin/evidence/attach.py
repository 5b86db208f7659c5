"""Put the evidence score of a pair onto the artifact document the hook is about to store."""
from __future__ import annotations

from typing import Any

from .scores import pair_evidence_details

#: a match supports the evidence when its foreground weight (both ends) is at least this and it is an inlier
SUPPORT_FOREGROUND = 0.5


def attach_evidence(document: Any, pair: Any, layer_key: str, query: Any, candidate: Any) -> Any:
    """``document`` (an ``ExplanationArtifact``) with ``metrics.evidence`` for ``layer_key`` of ``pair``,
    and each listed match's ``supports_evidence`` flag (on the animal and agreeing with the transform).

    query / candidate: the ``LoadedImage``s; their optional ``foreground`` (mask or box at the display
    size) marks the animal, else the centre prior is used (see :mod:`.foreground`).
    """
    scores, geometry = pair_evidence_details(
        pair,
        query_foreground=getattr(query, "foreground", None),
        candidate_foreground=getattr(candidate, "foreground", None),
        query_display_size=tuple(query.display.shape[:2]),
        candidate_display_size=tuple(candidate.display.shape[:2]),
    )[layer_key]
    metrics = document.metrics.model_copy(update={"evidence": scores})
    flags = (geometry.inliers & (geometry.foreground >= SUPPORT_FOREGROUND)).tolist()
    matches = [match.model_copy(update={"supports_evidence": bool(flags[i]) if i < len(flags) else None})
               for i, match in enumerate(document.matches)]
    return document.model_copy(update={"metrics": metrics, "matches": matches})
