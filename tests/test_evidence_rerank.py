"""Opt-in re-ranking: the host's score and rank never change; the shortlist is re-ordered by fusion."""

from __future__ import annotations

import math

import pytest
from test_evidence_evaluation import record

from pairx_plugin.config import PairXConfig, load_config
from pairx_plugin.errors import ConfigError
from pairx_plugin.evidence.calibration import fit_calibration
from pairx_plugin.evidence.models import RerankConfig
from pairx_plugin.evidence.rerank import rerank_records


def query_records():
    return [
        record("q", "a", 0, 0.9, False, 0.05),
        record("q", "b", 1, 0.8, True, 0.8),
        record("q", "c", 2, 0.7, False, None),  # no evidence: can only move down
        record("q", "d", 3, float("nan"), False, 0.9),  # outside a shortlist of 3
        record("p", "e", 0, -math.inf, True, 0.2),
    ]


def test_rerank_moves_the_evidence_up_and_never_touches_host_score_or_rank():
    given = query_records()
    result = rerank_records(given, RerankConfig(enabled=True, shortlist_k=3, alpha=0.3))
    for before, after in zip(given, result):
        assert after.rank == before.rank and after.pair == before.pair
        assert (math.isnan(after.score) and math.isnan(before.score)) or after.score == before.score
        assert before.rerank is None  # inputs are not mutated
    positions = {r.candidate_id: r.rerank.position for r in result}
    assert positions == {"a": 1, "b": 0, "c": 2, "d": 3, "e": 0}
    assert result[1].rerank.fused_score == pytest.approx(0.3 * 0.5 + 0.7 * 0.8)
    assert result[3].rerank.fused_score is None and result[3].rerank.value == 0.9


def test_alpha_one_keeps_the_host_order_and_disabled_adds_nothing():
    kept = rerank_records(query_records(), RerankConfig(enabled=True, shortlist_k=3, alpha=1.0))
    assert [r.rerank.position for r in kept] == [0, 1, 2, 3, 0]
    off = rerank_records(query_records(), RerankConfig())
    assert all(r.rerank is None for r in off)


def test_ranked_metrics_and_calibrated_scores():
    by_irm = [record("q", "a", 0, 0.9, False, 0.1, irm=0.1), record("q", "b", 1, 0.8, True, 0.2, irm=0.9)]
    result = rerank_records(by_irm, RerankConfig(enabled=True, score="irm", alpha=0.3))
    assert [r.rerank.position for r in result] == [1, 0]
    calibration = fit_calibration([0.1, 0.2, 0.6, 0.8], [False, False, True, True])
    result = rerank_records(
        query_records(), RerankConfig(enabled=True, score="calibrated", shortlist_k=3), calibration=calibration
    )
    assert result[1].rerank.value == pytest.approx(1.0) and result[0].rerank.value == pytest.approx(0.0)
    with pytest.raises(ConfigError, match="calibration"):
        rerank_records(query_records(), RerankConfig(enabled=True, score="calibrated"))


def test_rerank_config_lives_under_pairx_and_rejects_bad_values():
    config = load_config({"pairx": {"rerank": {"enabled": True, "alpha": 0.5, "shortlist_k": 10}}})
    assert config.rerank.enabled and config.rerank.alpha == 0.5
    assert PairXConfig().rerank.enabled is False
    with pytest.raises(ConfigError, match="pairx.rerank.alpha"):
        PairXConfig(rerank={"alpha": 2})
    with pytest.raises(ConfigError, match="pairx.rerank.score"):
        PairXConfig(rerank={"score": "cosine"})
    assert "rerank" not in PairXConfig(rerank={"enabled": True}).model_dump(include={"k_lines"})
    assert PairXConfig(rerank={"enabled": True}).digest() == PairXConfig().digest()  # artifacts are shared
