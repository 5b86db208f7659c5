"""Per-forward LRP constants are computed once per distinct image of a batch (a top-k query repeats
the query image once per candidate) and give the same explanation as computing them on every row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.reference_models import seaturtle_batch
from pairx_plugin import PairX
from pairx_plugin.engine.relevance.cached_hooks import DistinctRows, HookSession


def test_distinct_rows_from_representatives():
    assert DistinctRows.from_representatives(None) is None
    assert DistinctRows.from_representatives([0, 1, 2]) is None  # nothing repeated: nothing to share
    rows = DistinctRows.from_representatives([0, 0, 0, 3, 4])
    assert rows is not None
    assert rows.first.tolist() == [0, 3, 4] and rows.spread.tolist() == [0, 0, 0, 1, 2]
    batch = torch.randn(3, 2, 4, 4)[[0, 0, 0, 1, 2]]
    assert torch.equal(rows.spread_back(rows.take(batch)), batch)


@pytest.mark.parametrize("bad", [[1, 0, 2], [0, 5], [-1, 0]])
def test_bad_representatives_are_refused(bad):
    with pytest.raises(ValueError, match="representatives"):
        DistinctRows.from_representatives(bad)


def test_straightforward_session_shares_nothing():
    session = HookSession(optimised=False)
    session.declare_rows([0, 0, 2])
    assert session.rows is None


def _query(engine: PairX, images: torch.Tensor):
    return engine.explain_query(images[:1], [images[i : i + 1] for i in (1, 2, 3)])


def test_query_constants_computed_once_per_image(lite0_imagenet, shared_dir, monkeypatch):
    images = seaturtle_batch(shared_dir, 128, flips=False)
    engine = PairX(lite0_imagenet, layer_keys=["blocks.3"], k_lines=8, k_colors=3)
    taken: list[tuple[int, int]] = []
    take = DistinctRows.take

    def spy(self, x):
        out = take(self, x)
        taken.append((x.shape[0], out.shape[0]))
        return out

    monkeypatch.setattr(DistinctRows, "take", spy)
    shared = _query(engine, images)
    # three query rows + three candidates forwarded; the constants cover the query once
    assert taken and set(taken) == {(6, 4)}
    monkeypatch.setattr(HookSession, "declare_rows", lambda self, reps: setattr(self, "rows", None))
    taken.clear()
    every_row = _query(engine, images)
    assert not taken
    for a, b in zip(shared, every_row):
        la, lb = a.layers["blocks.3"], b.layers["blocks.3"]
        assert a.cosine == b.cosine
        np.testing.assert_allclose(la.relevance_query, lb.relevance_query, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(la.relevance_candidate, lb.relevance_candidate, rtol=1e-5, atol=1e-9)
        assert [(m.query_cell, m.candidate_cell) for m in la.matches] == [
            (m.query_cell, m.candidate_cell) for m in lb.matches
        ]
        scale = max(float(np.abs(lb.pixel_relevance_query).max()), 1e-12)
        np.testing.assert_allclose(la.pixel_relevance_query, lb.pixel_relevance_query, atol=1e-5 * scale)
        scale = max(float(np.abs(lb.pixel_relevance_candidate).max()), 1e-12)
        np.testing.assert_allclose(la.pixel_relevance_candidate, lb.pixel_relevance_candidate, atol=1e-5 * scale)
