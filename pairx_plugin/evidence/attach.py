"""Put the evidence score of a pair onto the artifact document the hook is about to store."""

from __future__ import annotations

import logging
from typing import Any

from .models import EvidenceScores
from .scores import pair_evidence_details

#: a match supports the evidence when its foreground weight (both ends) is at least this and it is an inlier
SUPPORT_FOREGROUND = 0.5

log = logging.getLogger(__name__)


def attach_evidence(document: Any, pair: Any, layer_key: str, query: Any, candidate: Any) -> Any:
    """``document`` (an ``ExplanationArtifact``) with ``metrics.evidence`` for ``layer_key`` of ``pair``,
    and each listed match's ``supports_evidence`` flag (on the animal and agreeing with the transform).
    If the score cannot be computed the document comes back unchanged (evidence null) and the error
    is logged: an evidence problem never costs the explanation.

    query / candidate: the ``LoadedImage``s; their optional ``foreground`` (mask or box at the display
    size) marks the animal, else the centre prior is used (see :mod:`.foreground`).
    """
    try:
        scores, geometry = pair_evidence_details(
            pair,
            query_foreground=getattr(query, "foreground", None),
            candidate_foreground=getattr(candidate, "foreground", None),
            query_display_size=tuple(query.display.shape[:2]),
            candidate_display_size=tuple(candidate.display.shape[:2]),
        )[layer_key]
    except Exception:  # the explanation is worth keeping without its evidence score
        log.exception(
            "evidence score failed for %s -> %s at %s; the artifact is stored without it",
            document.query_id,
            document.candidate_id,
            layer_key,
        )
        return document
    metrics = document.metrics.model_copy(update={"evidence": EvidenceScores.model_validate(scores.model_dump())})
    flags = (geometry.inliers & (geometry.foreground >= SUPPORT_FOREGROUND)).tolist()
    matches = [
        match.model_copy(update={"supports_evidence": bool(flags[i]) if i < len(flags) else None})
        for i, match in enumerate(document.matches)
    ]
    return document.model_copy(update={"metrics": metrics, "matches": matches})
