"""The optimised LRP path (cached modified forwards, skipped ordinary backward, boxed transposes)
gives the same explanation as the straightforward one."""
from __future__ import annotations

import numpy as np
import pytest

from pairx_plugin import PairX
from pairx_plugin.engine.relevance import cached_hooks
from benchmarks.reference_models import seaturtle_batch


def _r(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.mark.parametrize("mode", ["conservative", "parity"])
def test_optimised_equals_straightforward(lite0_imagenet, shared_dir, monkeypatch, mode):
    images = seaturtle_batch(shared_dir, 160, flips=False)
    engine = PairX(lite0_imagenet, layer_keys=["blocks.3"], k_lines=10, k_colors=3, mode=mode)
    fast = engine.explain_query(images[:1], [images[1:2], images[2:3]])
    monkeypatch.setattr(cached_hooks, "OPTIMISED", False)
    slow = engine.explain_query(images[:1], [images[1:2], images[2:3]])
    for a, b in zip(fast, slow):
        la, lb = a.layers["blocks.3"], b.layers["blocks.3"]
        assert a.cosine == pytest.approx(b.cosine, abs=1e-6)
        assert _r(la.relevance_query, lb.relevance_query) >= 0.9999
        assert _r(la.relevance_candidate, lb.relevance_candidate) >= 0.9999
        assert [(m.query_cell, m.candidate_cell) for m in la.matches] == \
               [(m.query_cell, m.candidate_cell) for m in lb.matches]
        assert len(la.pixel_relevance_query) == 3
        for k in range(3):
            assert _r(la.pixel_relevance_query[k], lb.pixel_relevance_query[k]) >= 0.9999
            assert _r(la.pixel_relevance_candidate[k], lb.pixel_relevance_candidate[k]) >= 0.9999
