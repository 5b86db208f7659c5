"""Feature-map layout adapters: whatever a layer outputs, the engine works on NCHW.

An adapter converts a layer's native output to an NCHW view (``to_nchw``) and converts an NCHW
tensor (a gradient seed for one cell, say) back to the native layout (``from_nchw``). Both are
pure reshapes/permutes/slices, so relevance read through them is unchanged.

Adapters are chosen by the model's family (``families.py``: Swin stages are NHWC, ViT layers are
tokens) and otherwise by the generic rules in ``LAYOUT_RULES``; adding a family means registering it
with its layout rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InvalidInputError


class Layout:
    """Identity layout: the layer already outputs (B, C, H, W)."""

    name = "nchw"

    def to_nchw(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def from_nchw(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t


class NHWCLayout(Layout):
    """Channels-last maps (timm / torchvision Swin stages): (B, H, W, C) <-> (B, C, H, W)."""

    name = "nhwc"

    def to_nchw(self, t: torch.Tensor) -> torch.Tensor:
        _require_ndim(t, 4, "an NHWC feature map (B, H, W, C)")
        return t.permute(0, 3, 1, 2)

    def from_nchw(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        _require_ndim(t, 4, "an NCHW map (B, C, H, W)")
        native = t.permute(0, 2, 3, 1).contiguous()
        _require_same_shape(native, like, "the NHWC layer output")
        return native


class TokenGridLayout(Layout):
    """ViT-style tokens (B, P + gh*gw, C): P prefix tokens (CLS, registers, distillation) then a grid.

    ``to_nchw`` drops the prefix tokens; ``from_nchw`` puts zeros on them, so a seed placed through
    it injects nothing at the prefix.
    """

    name = "tokens"

    def __init__(self, num_prefix_tokens: int, grid_size: tuple[int, int]) -> None:
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))

    def _check_tokens(self, t: torch.Tensor) -> None:
        _require_ndim(t, 3, "a token sequence (B, N, C)")
        expected = self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]
        if t.shape[1] != expected:
            raise InvalidInputError(
                f"token sequence has {t.shape[1]} tokens but this layout expects {self.num_prefix_tokens} prefix "
                f"tokens + a {self.grid_size[0]}x{self.grid_size[1]} grid = {expected}; the input size must match "
                "the model's patch grid (model.patch_embed.grid_size)"
            )

    def to_nchw(self, t: torch.Tensor) -> torch.Tensor:
        self._check_tokens(t)
        b, _, c = t.shape
        gh, gw = self.grid_size
        return t[:, self.num_prefix_tokens :, :].reshape(b, gh, gw, c).permute(0, 3, 1, 2)

    def from_nchw(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        _require_ndim(t, 4, "an NCHW map (B, C, H, W)")
        self._check_tokens(like)
        b, c, gh, gw = t.shape
        if (gh, gw) != self.grid_size or (b, c) != (like.shape[0], like.shape[2]):
            raise InvalidInputError(
                f"NCHW map of shape {tuple(t.shape)} does not fit tokens of shape {tuple(like.shape)} with a "
                f"{self.grid_size[0]}x{self.grid_size[1]} grid; pass a map made by to_nchw of this layer's output"
            )
        grid = t.permute(0, 2, 3, 1).reshape(b, gh * gw, c)
        prefix = grid.new_zeros(b, self.num_prefix_tokens, c)
        return torch.cat([prefix, grid], dim=1)


def _require_ndim(t: torch.Tensor, ndim: int, what: str) -> None:
    if not isinstance(t, torch.Tensor) or t.ndim != ndim:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise InvalidInputError(f"expected {what}, got {shape}; pass the layer's own output / a map from to_nchw")


def _require_same_shape(t: torch.Tensor, like: torch.Tensor, what: str) -> None:
    if tuple(t.shape) != tuple(like.shape):
        raise InvalidInputError(
            f"map of native shape {tuple(t.shape)} does not match {what} of shape {tuple(like.shape)}; "
            "pass a map made by to_nchw of this layer's output"
        )


def unwrap_backbone(model: nn.Module) -> tuple[nn.Module, str]:
    """``(model.backbone, "backbone.")`` for wrapper models, else ``(model, "")``."""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        return backbone, "backbone."
    return model, ""


def token_grid(model: nn.Module) -> tuple[int, tuple[int, int]] | None:
    """(number of prefix tokens, patch grid) of a ViT-style model (looks through ``.backbone``), or None."""
    inner, _ = unwrap_backbone(model)
    patch_embed = getattr(inner, "patch_embed", None)
    grid = getattr(patch_embed, "grid_size", None)
    prefix = getattr(inner, "num_prefix_tokens", None)
    if grid is None or prefix is None:
        return None
    return int(prefix), (int(grid[0]), int(grid[1]))


_token_grid = token_grid  # kept for one release (the former private name)


@dataclass(frozen=True)
class LayoutRule:
    """``matches(model, key, module, output) -> bool``; ``make(model, key, module, output)``."""

    name: str
    matches: Callable[[nn.Module, str, nn.Module, torch.Tensor], bool]
    make: Callable[[nn.Module, str, nn.Module, torch.Tensor], Layout]


def _is_nchw(model: nn.Module, key: str, module: nn.Module, output: torch.Tensor) -> bool:
    return isinstance(output, torch.Tensor) and output.ndim == 4


#: Generic rules, checked in order after the model's families (``families.FAMILIES``) had their say.
LAYOUT_RULES: list[LayoutRule] = [
    LayoutRule("nchw", _is_nchw, lambda *a: Layout()),
]


def detect_layout(model: nn.Module, key: str, module: nn.Module, output: torch.Tensor) -> Layout | None:
    """The layout adapter for ``module``'s ``output``, or None if nothing understands it.

    The layout rules of the families ``model`` belongs to go first (NHWC Swin stages, ViT tokens),
    then the generic ones.
    """
    from .families import matching_families  # the registry imports this module

    for family in matching_families(model):
        if family.layout is not None:
            layout = family.layout(model, key, module, output)
            if layout is not None:
                return layout
    for rule in LAYOUT_RULES:
        if rule.matches(model, key, module, output):
            return rule.make(model, key, module, output)
    return None


# ----------------------------------------------------------------------------- default layers


def default_layer_hint(model: nn.Module) -> str | None:
    """The layer PAIR-X should explain by default, from the model's family, or None.

    * timm Swin / SwinV2 and ConvNeXt: the stride-16 stage (``layers.2`` / ``stages.2``), the analogue
      of a ResNet's ``layer3`` (fine enough cells to match, deep enough to be semantic).
    * torchvision Swin and ConvNeXt: the stride-16 stage, ``features.5``.
    * ViT / DeiT / DINOv2: the block about two thirds deep (``blocks.7`` of 12); later blocks
      concentrate relevance on the prefix tokens.

    Looks through a ``.backbone`` wrapper (the key then starts with ``backbone.``). Other models give
    None, and the engine's own default applies (the first stage at stride 16).
    """
    from .families import matching_families  # the registry imports this module

    for family in matching_families(model):
        if family.default_layer is not None:
            hint = family.default_layer(model)
            if hint:
                return hint
    return None
