"""Opt-in re-ranking for WBIA requests: ``xpx_rerank*`` keys, in the request's cfgstr.

WildMe's MiewID plugin re-ranks a query's shortlist by fusing cosine with PAIR-X numbers; here the
same switch is the ``xpx_rerank`` key family, mapped onto the core's ``pairx.rerank``
(:class:`pairx_plugin.evidence.RerankConfig`): the hook then gives every explained record a
``rerank`` position and fused score. The cm's own scores and order are never changed (the hook's
rule); :func:`reranked_daids` gives the re-ranked order of a cm's explained candidates, which a
review UI or a client of the ``xpx_explanations`` JSON can show beside the host's order. All keys
are in ``get_cfgstr()``, so WBIA's cache keys change with them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pairx_plugin.evidence.models import RerankConfig

_SCORES = ("evidence", "irm", "mc", "inlier_ratio", "match_count")


def _alpha(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= float(value) <= 1.0


#: (name, default, check, expected) of each key; ``config.XPX_PARAMS`` declares them
RERANK_PARAM_SPECS: tuple[tuple[str, Any, Any, str], ...] = (
    ("xpx_rerank", False, lambda v: isinstance(v, bool), "true or false (re-rank the shortlist; off by default)"),
    (
        "xpx_rerank_k",
        5,
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 2,
        "an integer >= 2 (candidates re-ordered per query)",
    ),
    ("xpx_rerank_alpha", 0.3, _alpha, "a number in [0, 1] (weight of the host's rank)"),
    ("xpx_rerank_score", "evidence", lambda v: v in _SCORES, f"one of {list(_SCORES)}"),
)


def rerank_config(xpx: Any) -> RerankConfig:
    """The core re-ranking settings of a (validated) ``XpxConfig``."""
    return RerankConfig(
        enabled=xpx.xpx_rerank,
        shortlist_k=xpx.xpx_rerank_k,
        alpha=float(xpx.xpx_rerank_alpha),
        score=xpx.xpx_rerank_score,
    )


def reranked_daids(records: Iterable[Any]) -> list[int]:
    """Database aids of one query's records in re-ranked order (host rank for records without one)."""
    items = list(records)
    return [
        int(r.candidate_id) for r in sorted(items, key=lambda r: (r.rerank.position if r.rerank else r.rank, r.rank))
    ]
