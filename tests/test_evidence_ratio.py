"""Lowe's ratio of mutual matches (engine.matching.nearest_ratio), the distinctiveness input."""

from __future__ import annotations

import pytest
import torch

from pairx_plugin.engine.matching import mutual_nearest_neighbours, nearest_ratio


def test_ratio_is_the_larger_of_both_directions():
    # 1-channel maps of 3 cells (C=1, h=1, w=3): values chosen so the ratios are easy to read
    fm0 = torch.tensor([[[0.0, 10.0, 20.0]]])
    fm1 = torch.tensor([[[1.0, 10.5, 24.0]]])
    idx0, idx1, _ = mutual_nearest_neighbours(fm0, fm1)
    assert idx0.tolist() == [0, 1, 2] and idx1.tolist() == [0, 1, 2]
    ratio = nearest_ratio(fm0, fm1, idx0, idx1)
    # cell 0: query side 1/10.5, candidate side 1/9 -> 1/9; cell 1: 0.5/9 vs 0.5/9.5; cell 2: 4/9.5 vs 4/14
    assert ratio.tolist() == pytest.approx([1 / 9, 0.5 / 9, 4 / 9.5], rel=1e-5)


def test_single_cell_maps_and_no_matches():
    one = torch.ones(2, 1, 1)
    idx = torch.tensor([0])
    assert nearest_ratio(one, one, idx, idx).tolist() == [1.0]
    empty = torch.tensor([], dtype=torch.long)
    assert nearest_ratio(torch.rand(2, 2, 2), torch.rand(2, 2, 2), empty, empty).numel() == 0


def test_engine_matches_carry_the_ratio():
    from pairx_plugin.engine.engine import PairX

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=4),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )
    pair = PairX(model, layer_keys=["2"], k_lines=5, k_colors=1).explain_pair(
        torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    )
    ratios = [m.ratio for m in pair.layers["2"].matches]
    assert ratios and all(r is not None and 0.0 <= r <= 1.0 for r in ratios)
