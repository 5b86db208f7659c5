"""WBIA ``xpx_rerank*`` keys: declared, validated, in the cfgstr, mapped onto pairx.rerank."""

from __future__ import annotations

import pytest
from test_evidence_evaluation import record

from pairx_plugin.errors import ConfigError
from wbia_pairx.config import XpxConfig
from wbia_pairx.rerank import reranked_daids


def test_rerank_keys_reach_the_core_config_and_the_cfgstr():
    off = XpxConfig()
    assert off.pairx_config().rerank.enabled is False
    on = XpxConfig(xpx_rerank=True, xpx_rerank_k=3, xpx_rerank_alpha=0.5, xpx_rerank_score="mc")
    rerank = on.pairx_config().rerank
    assert (rerank.enabled, rerank.shortlist_k, rerank.alpha, rerank.score) == (True, 3, 0.5, "mc")
    assert off.get_cfgstr() != on.get_cfgstr()
    assert "xpx_rerank_alpha=0.5" in on.get_cfgstr()


@pytest.mark.parametrize(
    ("key", "value"),
    [("xpx_rerank", 1), ("xpx_rerank_k", 1), ("xpx_rerank_alpha", 2.0), ("xpx_rerank_score", "cosine")],
)
def test_bad_rerank_keys_are_named(key, value):
    with pytest.raises(ConfigError, match=key):
        XpxConfig(**{key: value}).pairx_config()


def test_reranked_daids_follow_the_rerank_position():
    from pairx_plugin.evidence.models import RerankConfig
    from pairx_plugin.evidence.rerank import rerank_records

    records = [record("1", "10", 0, 0.9, False, 0.0), record("1", "11", 1, 0.8, True, 0.9)]
    assert reranked_daids(records) == [10, 11]
    assert reranked_daids(rerank_records(records, RerankConfig(enabled=True))) == [11, 10]
