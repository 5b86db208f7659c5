"""explain_query: one forward per distinct image, same results as separate explain_pair calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.reference_models import seaturtle_batch
from pairx_plugin import PairX


def _r(a, b) -> float:
    a, b = np.ravel(a), np.ravel(b)
    if np.allclose(a, b):
        return 1.0
    return float(np.corrcoef(a, b)[0, 1])


@pytest.fixture(scope="module")
def turtles(shared_dir):
    return seaturtle_batch(shared_dir, 224)  # 4 images + their flips


@pytest.fixture(scope="module")
def engine(lite0_imagenet):
    return PairX(lite0_imagenet, layer_keys=["blocks.3"], k_lines=12, k_colors=4)


CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))


def _on(device: str, engine: PairX, **settings) -> PairX:
    """The engine's model on ``device`` (a copy for CUDA), same settings."""
    if device == "cpu" and not settings:
        return engine
    import copy

    model = engine.model if device == "cpu" else copy.deepcopy(engine.model).to(device)
    return PairX(model, layer_keys=engine.layer_keys, k_lines=engine.k_lines, k_colors=engine.k_colors, **settings)


@pytest.mark.parametrize(
    ("device", "settings"),
    [
        ("cpu", {}),
        ("cpu", {"pixel_rows": 5}),  # the replicated back-projection CUDA chooses, forced on the CPU
        pytest.param(*CUDA.values, {}, marks=CUDA.marks),
    ],
)
def test_query_equals_separate_pairs(engine, turtles, device, settings):
    engine = _on(device, engine, **settings)
    q, cands = turtles[:1].to(device), [turtles[i : i + 1].to(device) for i in (1, 2, 5)]
    batched = engine.explain_query(q, cands)
    for cand, got in zip(cands, batched):
        alone = engine.explain_pair(q, cand)
        assert abs(got.cosine - alone.cosine) < 1e-5
        a, b = got.layers["blocks.3"], alone.layers["blocks.3"]
        assert _r(a.relevance_query, b.relevance_query) >= 0.9999
        assert _r(a.relevance_candidate, b.relevance_candidate) >= 0.9999
        assert [(m.query_cell, m.candidate_cell) for m in a.matches] == [
            (m.query_cell, m.candidate_cell) for m in b.matches
        ]
        for k in range(len(a.pixel_relevance_query)):
            assert _r(a.pixel_relevance_query[k], b.pixel_relevance_query[k]) >= 0.9999
            assert _r(a.pixel_relevance_candidate[k], b.pixel_relevance_candidate[k]) >= 0.9999


def test_one_forward_per_distinct_image(lite0_imagenet, turtles):
    engine = PairX(lite0_imagenet, layer_keys=["blocks.3"], k_lines=5, k_colors=2, max_batch_images=8)
    seen = []
    handle = lite0_imagenet.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].shape[0]) if args[0].shape[-1] == 224 else None
    )
    try:
        c1, c2 = turtles[1:2], turtles[2:3]
        results = engine.explain_query(turtles[:1], [c1, c2, c1.clone()])
    finally:
        handle.remove()
    assert seen == [4]  # one batched forward: a query row per distinct candidate + the 2 distinct candidates
    assert results[2].cosine == results[0].cosine


def test_batch_limit_splits_candidates(lite0_imagenet, turtles):
    engine = PairX(lite0_imagenet, layer_keys=["blocks.3"], k_lines=5, k_colors=2, max_batch_images=2)
    seen = []
    handle = lite0_imagenet.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].shape[0]) if args[0].shape[-1] == 224 else None
    )
    try:
        results = engine.explain_query(turtles[:1], [turtles[i : i + 1] for i in (1, 2, 3)])
    finally:
        handle.remove()
    assert seen == [4, 2]  # a query row per candidate rides along with each chunk of at most 2 candidates
    assert len(results) == 3 and all(r.layers["blocks.3"].matches for r in results)


def test_result_shapes_and_ordering(engine, turtles):
    result = engine.explain_pair(turtles[:1], turtles[1:2])
    layer = result.layers["blocks.3"]
    assert layer.relevance_query.shape == (14, 14) and layer.relevance_query.dtype == np.float32
    assert layer.pixel_relevance_query.shape == (4, 224, 224)
    assert layer.pixel_relevance_candidate.dtype == np.float32
    rel = [m.relevance for m in layer.matches]
    assert rel == sorted(rel, reverse=True) and len(rel) <= 12
    for m in layer.matches:
        x, y = m.query_cell
        assert m.query_xy == pytest.approx(((x + 0.5) * 16, (y + 0.5) * 16))
        assert m.relevance == pytest.approx(
            layer.relevance_query[y, x] * layer.relevance_candidate[m.candidate_cell[1], m.candidate_cell[0]], rel=1e-5
        )
    assert layer.metrics.match_count >= len(layer.matches)
    assert layer.metrics.mc == pytest.approx(float(np.mean(rel)))
    # pixel relevance of a cell lies around the cell: its peak is inside the cell's receptive field
    peak = np.unravel_index(layer.pixel_relevance_candidate[0].argmax(), (224, 224))
    cx, cy = layer.matches[0].candidate_xy
    assert abs(peak[0] - cy) < 112 and abs(peak[1] - cx) < 112
    assert np.isfinite(layer.pixel_relevance_query).all()
    assert -1 <= result.cosine <= 1


def test_same_candidate_as_query_matches_itself(engine, turtles):
    result = engine.explain_pair(turtles[:1], turtles[:1].clone())
    layer = result.layers["blocks.3"]
    assert result.cosine == pytest.approx(1.0, abs=1e-5)
    assert all(m.query_cell == m.candidate_cell for m in layer.matches)
    assert layer.metrics.irm == pytest.approx(1.0, abs=1e-3)


def test_several_layers_in_one_forward(lite0_imagenet, turtles):
    engine = PairX(lite0_imagenet, layer_keys=["blocks.2", "blocks.3"], k_lines=5, k_colors=2)
    result = engine.explain_pair(turtles[:1], turtles[1:2])
    assert result.layers["blocks.2"].relevance_query.shape == (28, 28)
    assert result.layers["blocks.3"].relevance_query.shape == (14, 14)


def test_default_layer_is_chosen(lite0_imagenet):
    assert PairX(lite0_imagenet).layer_keys == ["blocks.3"]


def test_pixel_budget_bounds_each_batch(lite0_imagenet, turtles):
    """Large inputs get smaller batches: the chunk's batch (a query row per candidate plus the
    candidates) never exceeds max_batch_pixels."""
    small = torch.nn.functional.interpolate(turtles, size=(96, 96), mode="bilinear", align_corners=False)
    engine = PairX(
        lite0_imagenet, layer_keys=["blocks.3"], k_lines=4, k_colors=1, max_batch_images=8, max_batch_pixels=5 * 96 * 96
    )
    seen = []
    handle = lite0_imagenet.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].shape[0]) if args[0].shape[-1] == 96 else None
    )
    try:
        results = engine.explain_query(small[:1], [small[i : i + 1] for i in (1, 2, 3, 4, 5)])
    finally:
        handle.remove()
    assert seen == [4, 4, 2]  # 2 query rows + 2, 2 + 2, 1 + 1
    alone = engine.explain_pair(small[:1], small[5:6])
    assert results[4].cosine == pytest.approx(alone.cosine, abs=1e-6)


def test_two_models_explained_in_parallel_threads(lite0_imagenet, turtles):
    """Per-forward caches are per thread: concurrent explanations of two models do not interfere."""
    import threading

    import timm

    torch.manual_seed(0)
    other = timm.create_model("resnet18", num_classes=0).eval()
    jobs = {
        "lite0": PairX(lite0_imagenet, layer_keys=["blocks.3"], k_lines=6, k_colors=3),
        "resnet": PairX(other, layer_keys=["layer3"], k_lines=6, k_colors=3),
    }
    alone = {name: e.explain_pair(turtles[:1], turtles[1:2]) for name, e in jobs.items()}
    together, errors = {}, []

    def run(name):
        try:
            for _ in range(2):
                together[name] = jobs[name].explain_pair(turtles[:1], turtles[1:2])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(name,)) for name in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for name in jobs:
        a, b = alone[name], together[name]
        key = jobs[name].layer_keys[0]
        assert np.array_equal(a.layers[key].pixel_relevance_query, b.layers[key].pixel_relevance_query)
        assert np.array_equal(a.layers[key].relevance_candidate, b.layers[key].relevance_candidate)


def test_replicated_back_projection_equals_the_shared_forward(engine, turtles):
    """pixel_rows (one row per cell, forwards stopped at the layer: the CUDA default) changes no number."""
    q, cands = turtles[:1], [turtles[i : i + 1] for i in (1, 2)]
    shared = engine.explain_query(q, cands)
    replicated = _on("cpu", engine, pixel_rows=3).explain_query(q, cands)
    for a, b in zip(shared, replicated):
        la, lb = a.layers["blocks.3"], b.layers["blocks.3"]
        assert [(m.query_cell, m.candidate_cell) for m in la.matches] == [
            (m.query_cell, m.candidate_cell) for m in lb.matches
        ]
        for k in range(len(la.pixel_relevance_query)):
            assert _r(la.pixel_relevance_query[k], lb.pixel_relevance_query[k]) >= 0.9999
            assert _r(la.pixel_relevance_candidate[k], lb.pixel_relevance_candidate[k]) >= 0.9999
