"""How the cosine similarity of two embeddings becomes relevance at each embedding.

* conservative: R0 = R1 = n0 ⊙ n1, the elementwise product of the unit-normalised embeddings. It
  sums to the cosine exactly, so it decomposes the score being explained.
* parity: the published seed, cos · ∂cos/∂e for each embedding (what ``cos.backward(gradient=cos)``
  leaves in ``e.grad``), computed here in closed form instead of by a backward pass.
"""

from __future__ import annotations

import torch


def cosine(e0: torch.Tensor, e1: torch.Tensor) -> torch.Tensor:
    similarity: torch.Tensor = (e0 * e1).sum(-1) / (e0.norm(dim=-1) * e1.norm(dim=-1))
    return similarity


def product_seed(e0: torch.Tensor, e1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n0 = e0 / e0.norm(dim=-1, keepdim=True)
    n1 = e1 / e1.norm(dim=-1, keepdim=True)
    r = n0 * n1
    return r, r.clone()


def published_seed(e0: torch.Tensor, e1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = e0.norm(dim=-1, keepdim=True), e1.norm(dim=-1, keepdim=True)
    c = cosine(e0, e1).unsqueeze(-1)
    g0 = e1 / (a * b) - c * e0 / a**2
    g1 = e0 / (a * b) - c * e1 / b**2
    return c * g0, c * g1


SEEDS = {"conservative": product_seed, "parity": published_seed}
