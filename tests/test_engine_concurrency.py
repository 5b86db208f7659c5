"""Concurrency contract: threads may share one model and one PairX; the host's model is never touched.

Explanations of the same model are serialised by ``engine.locks.model_lock`` (taken by the engine
around the whole guarded pass), so results are byte-identical to a serial run and the model's state
dict, training flags and ``requires_grad`` bits are identical afterwards, also when one thread fails.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from engine_support import assert_same_state, model_state, randomise_norms_and_biases
from torch import nn

from pairx_plugin import PairX
from pairx_plugin.engine import engine as engine_module
from pairx_plugin.errors import PairXError

THREADS = 8
CALLS = 25
SIZE = 32
LAYER = "down"


class TinyResNet(nn.Module):
    """A seeded BatchNorm CNN with a residual block (BatchNorm merges, residual sums, rule hooks, as in a
    ResNet) small enough for 400 explanations in seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.down = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(16, 16, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.head(self.down(x))


@pytest.fixture(scope="module")
def small_inputs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.rand((1, 3, SIZE, SIZE), generator=g) for _ in range(4)]


def _host_model() -> nn.Module:
    torch.manual_seed(0)
    model = randomise_norms_and_biases(TinyResNet()).train()
    model.stem.requires_grad_(False)  # a mix of frozen and trainable parameters, as a host may have
    return model


def _job(call: int, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    return inputs[call % 2], [inputs[2 + call % 2], inputs[(call + 1) % 4]]


def _fingerprint(results) -> list[bytes]:
    """Every number an explanation carries, as bytes (exact comparison)."""
    out = []
    for pair in results:
        layer = pair.layers[LAYER]
        out.append(np.float64(pair.cosine).tobytes())
        for array in (
            layer.relevance_query,
            layer.relevance_candidate,
            layer.pixel_relevance_query,
            layer.pixel_relevance_candidate,
        ):
            out.append(np.ascontiguousarray(array).tobytes())
        out.append(repr([(m.query_cell, m.candidate_cell, m.relevance, m.distance) for m in layer.matches]).encode())
        out.append(repr(layer.metrics).encode())
    return out


def _run_threads(engine: PairX, inputs: list[torch.Tensor]) -> tuple[dict, dict]:
    results: dict[tuple[int, int], list[bytes]] = {}
    errors: dict[tuple[int, int], BaseException] = {}
    start = threading.Barrier(THREADS)

    def worker(t: int) -> None:
        start.wait()
        for call in range(CALLS):
            query, candidates = _job(t * CALLS + call, inputs)
            try:
                results[(t, call)] = _fingerprint(engine.explain_query(query, candidates))
            except Exception as exc:  # noqa: BLE001 - recorded and asserted on below
                errors[(t, call)] = exc

    threads = [threading.Thread(target=worker, args=(t,), name=f"pairx-test-{t}") for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


def _serial(engine: PairX, inputs: list[torch.Tensor]) -> dict[int, list[bytes]]:
    # the job depends only on call % 4 (queries and candidates cycle with period 2 and 4)
    return {k: _fingerprint(engine.explain_query(*_job(k, inputs))) for k in range(4)}


def test_threads_share_one_model_and_one_pairx(small_inputs):
    model = _host_model()
    before = model_state(model)
    engine = PairX(model, layer_keys=[LAYER], k_lines=5, k_colors=2)
    expected = _serial(engine, small_inputs)
    assert_same_state(before, model_state(model))
    results, errors = _run_threads(engine, small_inputs)
    assert not errors, f"{len(errors)} calls failed, first: {next(iter(errors.values()))!r}"
    assert len(results) == THREADS * CALLS
    for (t, call), got in results.items():
        assert got == expected[(t * CALLS + call) % 4], f"thread {t} call {call} differs from the serial result"
    assert_same_state(before, model_state(model))
    assert model.training and not any(p.requires_grad for p in model.stem.parameters())


def test_a_failure_in_one_thread_leaves_the_model_and_the_others_intact(small_inputs, monkeypatch):
    model = _host_model()
    before = model_state(model)
    engine = PairX(model, layer_keys=[LAYER], k_lines=5, k_colors=2)
    expected = _serial(engine, small_inputs)
    original = engine_module.PairX._pixel_relevance
    failed_once = threading.Event()

    def sometimes_failing(self, *args, **kwargs):
        if threading.current_thread().name == "pairx-test-3" and not failed_once.is_set():
            failed_once.set()
            raise RuntimeError("injected failure in thread 3")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(engine_module.PairX, "_pixel_relevance", sometimes_failing)
    results, errors = _run_threads(engine, small_inputs)
    assert list(errors) == [(3, 0)]
    failure = errors[(3, 0)]
    assert isinstance(failure, PairXError) and failure.stage == "pixels"
    assert isinstance(failure.__cause__, RuntimeError) and "injected" in str(failure.__cause__)
    assert len(results) == THREADS * CALLS - 1
    for (t, call), got in results.items():
        assert got == expected[(t * CALLS + call) % 4], f"thread {t} call {call} differs from the serial result"
    assert_same_state(before, model_state(model))
    assert model.training
