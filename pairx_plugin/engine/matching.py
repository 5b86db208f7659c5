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
