"""Opt-in re-ranking: re-order each query's shortlist by the host score fused with evidence.

The host's ``score`` and ``rank`` are never touched; each record gains a :class:`RerankInfo`
(``position`` after re-ranking, ``fused_score``). With k records in a query's shortlist
(host rank < ``shortlist_k``):

    host_term     = 1 − rank_within_shortlist / (k − 1)           (1 for the host's best)
    evidence_term = the record's evidence score, or its calibrated probability, or for the published
                    metrics (irm, mc, inlier_ratio, match_count, whose scales differ) 1 − r / (k − 1)
                    with r their descending rank within the shortlist
    fused         = alpha × host_term + (1 − alpha) × evidence_term

A record without the value (not explained, failed, IRM undefined) gets evidence_term 0: it can move
down but never up. Ties keep the host order. Records outside the shortlist keep their host position.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from .calibration import Calibration, load_calibration
from .models import RerankConfig, RerankInfo

#: scores read from ``record.explanation.metrics`` whose values are fused as within-shortlist ranks
RANKED_METRICS = ("irm", "mc", "inlier_ratio", "match_count")


def record_value(record: Any, score: str, calibration: Calibration | None = None) -> float | None:
    """The value of ``score`` on a record (``MatchRecord``), or None when the record has none."""
    ref = getattr(record, "explanation", None)
    if ref is None:
        return None
    metrics = ref.metrics
    if score in RANKED_METRICS:
        value = getattr(metrics, score)
        return None if value is None else float(value)
    evidence = getattr(metrics, "evidence", None)
    if evidence is None:
        return None
    if score == "calibrated":
        if calibration is None:
            raise ConfigError(
                "pairx.rerank.score: 'calibrated' needs pairx.rerank.calibration (a file from `pairx-plugin calibrate`)"
            )
        return float(calibration.predict(evidence.score))
    return float(evidence.score)


def _rank_terms(values: list[float | None]) -> list[float]:
    k = len(values)
    present = [(v, i) for i, v in enumerate(values) if v is not None]
    order = sorted(present, key=lambda item: (-item[0], item[1]))
    terms = [0.0] * k
    for position, (_, index) in enumerate(order):
        terms[index] = 1.0 - position / max(k - 1, 1)
    return terms


def fused_order(
    ranks: Sequence[int], values: Sequence[float | None], *, alpha: float, ranked: bool
) -> tuple[list[int], list[float]]:
    """Indices of the shortlist in fused order (best first) and each item's fused score."""
    k = len(ranks)
    host_order = sorted(range(k), key=lambda i: ranks[i])
    host_term = [0.0] * k
    for position, index in enumerate(host_order):
        host_term[index] = 1.0 - position / max(k - 1, 1)
    if ranked:
        evidence_term = _rank_terms(list(values))
    else:
        evidence_term = [0.0 if v is None or not np.isfinite(v) else float(v) for v in values]
    fused = [alpha * h + (1.0 - alpha) * e for h, e in zip(host_term, evidence_term)]
    order = sorted(range(k), key=lambda i: (-fused[i], ranks[i]))
    return order, fused


def rerank_records(
    records: Sequence[Any], config: RerankConfig, *, calibration: Calibration | None = None, force: bool = False
) -> list[Any]:
    """Copies of ``records`` (``MatchRecord``) carrying ``rerank``; unchanged copies when disabled.

    force: re-rank even when ``config.enabled`` is false (``pairx-plugin evaluate`` does, to measure).
    """
    if not (config.enabled or force):
        return [record.model_copy() for record in records]
    if config.score == "calibrated" and calibration is None:
        if config.calibration is None:
            raise ConfigError(
                "pairx.rerank.score: 'calibrated' needs pairx.rerank.calibration (a file from `pairx-plugin calibrate`)"
            )
        calibration = load_calibration(config.calibration)
    groups: OrderedDict[str, list[int]] = OrderedDict()
    for index, record in enumerate(records):
        groups.setdefault(record.query_id, []).append(index)
    result: list[Any] = list(records)
    ranked = config.score in RANKED_METRICS
    for indices in groups.values():
        shortlist = sorted((i for i in indices if records[i].rank < config.shortlist_k), key=lambda i: records[i].rank)
        rest = sorted((i for i in indices if records[i].rank >= config.shortlist_k), key=lambda i: records[i].rank)
        values = [record_value(records[i], config.score, calibration) for i in shortlist]
        order, fused = fused_order([records[i].rank for i in shortlist], values, alpha=config.alpha, ranked=ranked)
        for position, local in enumerate(order):
            index = shortlist[local]
            info = RerankInfo(position=position, fused_score=fused[local], score=config.score, value=values[local])
            result[index] = records[index].model_copy(update={"rerank": info})
        for offset, index in enumerate(rest):
            info = RerankInfo(
                position=len(shortlist) + offset,
                fused_score=None,
                score=config.score,
                value=record_value(records[index], config.score, calibration),
            )
            result[index] = records[index].model_copy(update={"rerank": info})
    return result
