"""CUDA out-of-memory inside the engine: the chunk is halved and retried; a single candidate that still
does not fit fails alone with a clear PairXError. Injected on CPU by making the forward step raise
``torch.cuda.OutOfMemoryError``."""

from __future__ import annotations

import pytest
import timm
import torch
from engine_support import assert_same_state, model_state, randomise_norms_and_biases

from pairx_plugin import PairX
from pairx_plugin.engine import engine as engine_module
from pairx_plugin.errors import PairXError, StepError

SIZE = 64


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomise_norms_and_biases(timm.create_model("resnet18", num_classes=0))


@pytest.fixture(scope="module")
def images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return [torch.rand((1, 3, SIZE, SIZE), generator=g) for _ in range(5)]


def _forward_that_runs_out(batch_sizes: list[int], too_big) -> object:
    original = engine_module.PairX._forward

    def forward(self, run, images, rows):
        batch_sizes.append(len(images))
        if too_big(images, rows):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return original(self, run, images, rows)

    return forward


def _numbers(pair) -> tuple:
    layer = pair.layers["layer3"]
    return (
        pair.cosine,
        layer.relevance_query.tobytes(),
        layer.relevance_candidate.tobytes(),
        layer.pixel_relevance_query.tobytes(),
        layer.pixel_relevance_candidate.tobytes(),
    )


def test_out_of_memory_halves_the_chunk_and_retries(model, images, monkeypatch):
    query, candidates = images[0], images[1:]
    # what halving must reproduce: the same candidates in batches of two
    expected = PairX(model, layer_keys=["layer3"], k_lines=5, k_colors=2, max_batch_images=2).explain_query(
        query, candidates
    )
    before = model_state(model)
    batch_sizes: list[int] = []
    failed = []

    def once_at_full_size(images, rows):
        if len(images) == 8 and not failed:
            failed.append(True)
            return True
        return False

    monkeypatch.setattr(engine_module.PairX, "_forward", _forward_that_runs_out(batch_sizes, once_at_full_size))
    got = PairX(model, layer_keys=["layer3"], k_lines=5, k_colors=2, max_batch_images=4).explain_query(
        query, candidates
    )
    assert batch_sizes == [8, 4, 4]  # 4 query rows + 4 candidates ran out; two halves of 2 + 2 each
    assert [_numbers(p) for p in got] == [_numbers(p) for p in expected]
    assert_same_state(before, model_state(model))


def test_one_candidate_that_never_fits_fails_alone(model, images, monkeypatch):
    query, candidates = images[0], images[1:]
    before = model_state(model)
    batch_sizes: list[int] = []
    huge = candidates[2]
    monkeypatch.setattr(
        engine_module.PairX,
        "_forward",
        _forward_that_runs_out(batch_sizes, lambda images, rows: any(img is huge for img in images)),
    )
    engine = PairX(model, layer_keys=["layer3"], k_lines=5, k_colors=2, max_batch_images=4)
    results = engine.explain_query(query, candidates, return_exceptions=True)
    assert batch_sizes == [8, 4, 4, 2, 2]  # 4 ran out -> [0, 1] ok, [2, 3] ran out -> [2] fails alone, [3] ok
    failure = results[2]
    assert isinstance(failure, StepError) and failure.stage == "forward" and failure.candidate_index == 2
    assert "out of memory explaining candidates[2] even alone" in str(failure)
    assert isinstance(failure.__cause__, torch.cuda.OutOfMemoryError)
    assert all(not isinstance(results[i], PairXError) for i in (0, 1, 3))
    assert_same_state(before, model_state(model))

    with pytest.raises(StepError, match="even alone"):
        engine.explain_pair(query, huge)
    assert_same_state(before, model_state(model))
