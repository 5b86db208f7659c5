"""Parity mode reproduces the published PAIR-X outputs in ../shared/golden (real ImageNet weights)."""

from __future__ import annotations

import numpy as np
import pytest
from engine_support import DEVICES, golden_inputs

from pairx_plugin import PairX


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def parity_engines(lite0_imagenet):
    import copy

    engines: dict[str, PairX] = {}

    def on(device: str) -> PairX:
        if device not in engines:
            model = lite0_imagenet if device == "cpu" else copy.deepcopy(lite0_imagenet).to(device)
            engines[device] = PairX(model, layer_keys=["blocks.3"], k_lines=20, k_colors=10, mode="parity")
        return engines[device]

    return on


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [224, 440])
@pytest.mark.parametrize("pair", ["p12", "p13"])
def test_parity_matches_published_outputs(parity_engines, golden_dir, size, pair, device):
    gold, x0, x1 = golden_inputs(golden_dir, size, pair)
    result = parity_engines(device).explain_pair(x0.to(device), x1.to(device))
    layer = result.layers["blocks.3"]

    assert _pearson(layer.relevance_query, gold["ir0"]) >= 0.999
    assert _pearson(layer.relevance_candidate, gold["ir1"]) >= 0.999

    mine = [(m.query_cell, m.candidate_cell) for m in layer.matches]
    golden = [(tuple(a), tuple(b)) for a, b in zip(gold["match_coord0"].tolist(), gold["match_coord1"].tolist())]
    assert set(mine[:10]) == set(golden[:10])
    assert len(set(mine[:20]) & set(golden[:20])) >= 18
    for m, (kp0, kp1) in zip(layer.matches, zip(gold["match_kp0"], gold["match_kp1"])):
        if (m.query_cell, m.candidate_cell) == golden[layer.matches.index(m)]:
            assert np.allclose(m.query_xy, kp0) and np.allclose(m.candidate_xy, kp1)

    shared = 0
    for k, match in enumerate(mine[:10]):
        if match in golden[:10]:
            g = golden.index(match)
            assert _pearson(layer.pixel_relevance_query[k], gold["pix0"][g]) >= 0.99
            assert _pearson(layer.pixel_relevance_candidate[k], gold["pix1"][g]) >= 0.99
            shared += 1
    assert shared == 10

    if "cos" in gold:
        assert abs(result.cosine - float(gold["cos"])) <= 1e-5
    assert layer.relevance_query.shape == gold["ir0"].shape
    assert layer.pixel_relevance_query.shape == gold["pix0"].shape
    assert result.mode == "parity"
