"""Mutual nearest neighbours between two feature maps' cell vectors, on the maps' device."""

from __future__ import annotations

import torch


def mutual_nearest_neighbours(fm0: torch.Tensor, fm1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-checked L2 nearest neighbours between the cells of two (C, h, w) maps.

    Returns ``(idx0, idx1, distance)``: flat cell indices (row-major, ``y * w + x``) of each mutual
    pair, ordered by ``idx0`` ascending, and their L2 distances. Ties resolve to the lowest index,
    so the result is deterministic.
    """
    d0 = fm0.flatten(1).t().float()
    d1 = fm1.flatten(1).t().float()
    dist = torch.cdist(d0, d1, compute_mode="donot_use_mm_for_euclid_dist")
    nn01 = dist.argmin(dim=1)
    nn10 = dist.argmin(dim=0)
    idx0 = torch.arange(d0.shape[0], device=dist.device)
    mutual = nn10[nn01] == idx0
    idx0 = idx0[mutual]
    idx1 = nn01[mutual]
    return idx0, idx1, dist[idx0, idx1]


def nearest_ratio(fm0: torch.Tensor, fm1: torch.Tensor, idx0: torch.Tensor, idx1: torch.Tensor) -> torch.Tensor:
    """Lowe's ratio of each match: distance to the nearest / to the second-nearest cell of the other map.

    The larger of the two directions (query cell among the candidate's cells and the other way
    round), so a match is distinctive (ratio well below 1) only when neither end has a close rival.
    1.0 when a map has a single cell.
    """
    d0 = fm0.flatten(1).t().float()
    d1 = fm1.flatten(1).t().float()
    if d0.shape[0] < 2 or d1.shape[0] < 2 or idx0.numel() == 0:
        return torch.ones(idx0.shape, dtype=torch.float32, device=fm0.device)
    dist = torch.cdist(d0, d1, compute_mode="donot_use_mm_for_euclid_dist")
    rows = dist[idx0].topk(2, dim=1, largest=False).values  # query cell -> candidate cells
    cols = dist[:, idx1].t().topk(2, dim=1, largest=False).values  # candidate cell -> query cells
    ratio0 = rows[:, 0] / rows[:, 1].clamp_min(1e-12)
    ratio1 = cols[:, 0] / cols[:, 1].clamp_min(1e-12)
    return torch.maximum(ratio0, ratio1).clamp(0.0, 1.0)
