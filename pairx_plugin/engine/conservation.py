"""Measure relevance conservation: how much of the explained score reaches a layer.

``conservation(...)`` returns, for each image of a pair, sum(R at the layer) / sum(R at the
embedding). A conserving pass gives ≈ 1; the published parity pass on timm EfficientNets does not
(see docs/engine.md). Used by the tests and useful when adding a model family.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidInputError
from .guard import model_guard
from .hooks import capture_outputs
from .layers import resolve_layers
from .layouts import detect_layout
from .locks import model_lock
from .relevance import choose_backend
from .seeds import SEEDS


def conservation(
    model: nn.Module,
    x0: torch.Tensor,
    x1: torch.Tensor,
    layer_key: str,
    mode: str = "conservative",
    backend: str = "auto",
) -> tuple[float, float]:
    """sum(relevance at ``layer_key``) / sum(relevance seeded at the embedding), per image."""
    chooser = choose_backend(model, mode=mode, name=backend)
    modules = resolve_layers(model, [layer_key])
    with model_lock(model), model_guard(model), chooser.context(model) as runner, capture_outputs(modules) as outputs:
        x = torch.cat([x0, x1]).detach().clone().requires_grad_(True)
        emb = runner(x).flatten(1)
        e = emb.detach()
        r0, r1 = SEEDS[mode](e[:1], e[1:])
        seed = torch.cat([r0, r1])
        native = outputs[layer_key]
        (grad,) = torch.autograd.grad(emb, native, grad_outputs=chooser.seed(seed, e))
        rel = chooser.relevance(grad, native.detach())
        layout = detect_layout(model, layer_key, modules[layer_key], native)
        if layout is None:
            raise InvalidInputError(f"layer {layer_key!r} has no feature-map layout pairx understands")
        rel = layout.to_nchw(rel)
        sums = rel.flatten(1).sum(1) / seed.sum(1)
    return float(sums[0]), float(sums[1])
