"""Which candidates of an ``AnnotMatch`` get explained.

``annot`` ranks by ``annot_score_list``; ``name`` ranks by ``score_list``, where WBIA's
``set_cannonical_name_score`` leaves ``-inf`` at every annotation that is not its name's best, so
those are never picked. Non-finite scores are never picked either, the query's own aid is skipped
(WBIA adds it to the daids by default), and an empty ``daid_list`` selects nothing. Ranks are the
host's: the position in its own ordering by that score list (stable, descending).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pairx_plugin.errors import InvalidInputError


@dataclass(frozen=True)
class Candidate:
    qaid: int
    daid: int
    rank: int
    score: float


def _scores(cm: Any, score: str) -> np.ndarray | None:
    values = cm.annot_score_list if score == "annot" else cm.score_list
    if values is None:
        return None
    return np.asarray(values, dtype=np.float64)


def select_candidates(cm: Any, top_k: int, score: str = "annot") -> list[Candidate]:
    """The top ``top_k`` candidates of one cm (see the module docstring)."""
    if score not in ("annot", "name"):
        raise InvalidInputError(f"xpx_score must be 'annot' or 'name', got {score!r}")
    daids = np.asarray(cm.daid_list if cm.daid_list is not None else [], dtype=np.int64).ravel()
    if daids.size == 0 or top_k <= 0:
        return []
    scores = _scores(cm, score)
    if scores is None or scores.shape != daids.shape:
        field = "annot_score_list" if score == "annot" else "score_list"
        raise InvalidInputError(
            f"query {cm.qaid}: {field} has {None if scores is None else scores.shape[0]} entries for "
            f"{daids.size} daids; the host must fill it aligned with daid_list"
        )
    # host ranking: descending score, ties in daid_list order; non-finite scores last
    key = np.where(np.isfinite(scores), -scores, np.inf)
    order = np.argsort(key, kind="stable")
    picked: list[Candidate] = []
    for rank, idx in enumerate(order):
        daid, value = int(daids[idx]), float(scores[idx])
        if daid == int(cm.qaid) or not math.isfinite(value):
            continue
        picked.append(Candidate(int(cm.qaid), daid, rank, value))
        if len(picked) == top_k:
            break
    return picked
