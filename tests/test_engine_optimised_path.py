"""The optimised LRP path (cached modified forwards, skipped ordinary backward, boxed transposes)
gives the same explanation as the straightforward one."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.reference_models import seaturtle_batch
from pairx_plugin import PairX


def _r(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.mark.parametrize("mode", ["conservative", "parity"])
def test_optimised_equals_straightforward(lite0_imagenet, shared_dir, mode):
    images = seaturtle_batch(shared_dir, 160, flips=False)
    engine = PairX(lite0_imagenet, layer_keys=["blocks.3"], k_lines=10, k_colors=3, mode=mode)
    fast = engine.explain_query(images[:1], [images[1:2], images[2:3]])
    straightforward = PairX(lite0_imagenet, layer_keys=["blocks.3"], k_lines=10, k_colors=3, mode=mode, optimised=False)
    assert engine.backend.optimised and not straightforward.backend.optimised
    slow = straightforward.explain_query(images[:1], [images[1:2], images[2:3]])
    for a, b in zip(fast, slow):
        la, lb = a.layers["blocks.3"], b.layers["blocks.3"]
        assert a.cosine == pytest.approx(b.cosine, abs=1e-6)
        assert _r(la.relevance_query, lb.relevance_query) >= 0.9999
        assert _r(la.relevance_candidate, lb.relevance_candidate) >= 0.9999
        assert [(m.query_cell, m.candidate_cell) for m in la.matches] == [
            (m.query_cell, m.candidate_cell) for m in lb.matches
        ]
        assert len(la.pixel_relevance_query) == 3
        for k in range(3):
            assert _r(la.pixel_relevance_query[k], lb.pixel_relevance_query[k]) >= 0.9999
            assert _r(la.pixel_relevance_candidate[k], lb.pixel_relevance_candidate[k]) >= 0.9999


def test_optimised_is_owned_by_the_backend_context(lite0_imagenet):
    """No process-global switch: each context's hooks report to a session of its own."""
    from pairx_plugin.engine.relevance.cached_hooks import CachedForwardHook
    from pairx_plugin.engine.relevance.zennit_lrp import ZennitLRP

    fast, slow = ZennitLRP(optimised=True), ZennitLRP(optimised=False)
    with fast.run(lite0_imagenet) as run_fast:
        hooks_fast = [
            h
            for m in lite0_imagenet.modules()
            for h in m._forward_hooks.values()
            if isinstance(getattr(h, "__self__", None), CachedForwardHook)
        ]
        sessions = {h.__self__.session for h in hooks_fast}
        assert hooks_fast and len(sessions) == 1 and next(iter(sessions)).optimised
        assert run_fast.clock() < run_fast.clock()  # the run's own clock
    with slow.run(lite0_imagenet):
        hooks_slow = [
            h
            for m in lite0_imagenet.modules()
            for h in m._forward_hooks.values()
            if isinstance(getattr(h, "__self__", None), CachedForwardHook)
        ]
        assert hooks_slow and all(not h.__self__.session.optimised for h in hooks_slow)
