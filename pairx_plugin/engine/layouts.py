"""Feature-map layout adapters: whatever a layer outputs, the engine works on NCHW.

An adapter converts a layer's native output to an NCHW view (``to_nchw``) and converts an NCHW
tensor (a gradient seed for one cell, say) back to the native layout (``from_nchw``). Both are
pure reshapes/permutes/slices, so relevance read through them is unchanged.

Adapters are chosen by inspecting the layer module and its output (see ``LAYOUT_RULES``); adding
a family means adding a rule.
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


def _is_torchvision_swin(model: nn.Module) -> bool:
    return type(model).__name__ == "SwinTransformer" and type(model).__module__.startswith("torchvision.")


def _is_timm_nhwc_model(model: nn.Module) -> bool:
    return getattr(model, "output_fmt", None) == "NHWC"


def _is_nhwc_output(model: nn.Module, key: str, module: nn.Module, output: torch.Tensor) -> bool:
    """4-d outputs inside a channels-last Swin, except convolutions and explicit permutes back to NCHW."""
    if not isinstance(output, torch.Tensor) or output.ndim != 4 or isinstance(module, nn.Conv2d):
        return False
    inner, prefix = unwrap_backbone(model)
    if not key.startswith(prefix):
        return False
    if _is_timm_nhwc_model(inner):
        return True
    if _is_torchvision_swin(inner):
        if type(module).__name__ == "Permute":
            return list(getattr(module, "dims", [])) == [0, 2, 3, 1]
        local = key[len(prefix) :]
        return local == "norm" or local.startswith("features")
    return False


def _token_grid(model: nn.Module) -> tuple[int, tuple[int, int]] | None:
    inner, _ = unwrap_backbone(model)
    patch_embed = getattr(inner, "patch_embed", None)
    grid = getattr(patch_embed, "grid_size", None)
    prefix = getattr(inner, "num_prefix_tokens", None)
    if grid is None or prefix is None:
        return None
    return int(prefix), (int(grid[0]), int(grid[1]))


def _is_token_output(model: nn.Module, key: str, module: nn.Module, output: torch.Tensor) -> bool:
    if not isinstance(output, torch.Tensor) or output.ndim != 3:
        return False
    found = _token_grid(model)
    if found is None:
        return False
    prefix, (gh, gw) = found
    return output.shape[1] in (prefix + gh * gw, gh * gw)


def _make_token_layout(model: nn.Module, key: str, module: nn.Module, output: torch.Tensor) -> Layout:
    prefix, grid = _token_grid(model)  # type: ignore[misc]  # _is_token_output checked it
    if output.shape[1] == grid[0] * grid[1]:
        prefix = 0  # patch-embedding outputs and other prefix-free token sequences
    return TokenGridLayout(prefix, grid)


@dataclass(frozen=True)
class LayoutRule:
    """``matches(model, key, module, output) -> bool``; ``make(model, key, module, output)``."""

    name: str
    matches: Callable[[nn.Module, str, nn.Module, torch.Tensor], bool]
    make: Callable[[nn.Module, str, nn.Module, torch.Tensor], Layout]


def _is_nchw(model: nn.Module, key: str, module: nn.Module, output: torch.Tensor) -> bool:
    return isinstance(output, torch.Tensor) and output.ndim == 4


#: Checked in order; the first rule that matches decides. More specific rules go first.
LAYOUT_RULES: list[LayoutRule] = [
    LayoutRule("nhwc", _is_nhwc_output, lambda *a: NHWCLayout()),
    LayoutRule("tokens", _is_token_output, _make_token_layout),
    LayoutRule("nchw", _is_nchw, lambda *a: Layout()),
]


def detect_layout(model: nn.Module, key: str, module: nn.Module, output: torch.Tensor) -> Layout | None:
    """The layout adapter for ``module``'s ``output``, or None if no rule understands it."""
    for rule in LAYOUT_RULES:
        if rule.matches(model, key, module, output):
            return rule.make(model, key, module, output)
    return None


# ----------------------------------------------------------------------------- default layers


def _stride16_from_feature_info(model: nn.Module) -> str | None:
    """The module name timm's ``feature_info`` gives for reduction 16 (last one if several)."""
    info = getattr(model, "feature_info", None)
    if not isinstance(info, list):
        return None
    names = [entry.get("module") for entry in info if isinstance(entry, dict) and entry.get("reduction") == 16]
    return names[-1] if names and names[-1] else None


def _is_vit_like(model: nn.Module) -> bool:
    blocks = getattr(model, "blocks", None)
    return isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) > 0 and _token_grid(model) is not None


def default_layer_hint(model: nn.Module) -> str | None:
    """The layer PAIR-X should explain by default for transformer / ConvNeXt families, else None.

    * timm Swin / SwinV2 and ConvNeXt: the stride-16 stage (``layers.2`` / ``stages.2``), the analogue
      of a ResNet's ``layer3`` (fine enough cells to match, deep enough to be semantic).
    * torchvision Swin and ConvNeXt: the stride-16 stage, ``features.5``.
    * ViT / DeiT / DINOv2: the block about two thirds deep (``blocks.7`` of 12); later blocks
      concentrate relevance on the prefix tokens.

    Looks through a ``.backbone`` wrapper (the key then starts with ``backbone.``). Other models give
    None, and the engine's own default applies.
    """
    inner, prefix = unwrap_backbone(model)
    name = type(inner).__name__
    if _is_vit_like(inner):
        depth = len(inner.blocks)
        return f"{prefix}blocks.{max(0, round(depth * 2 / 3) - 1)}"
    from_torchvision = type(inner).__module__.startswith("torchvision.")
    if _is_timm_nhwc_model(inner) or (name == "ConvNeXt" and not from_torchvision):
        found = _stride16_from_feature_info(inner)
        return prefix + found if found else None
    if from_torchvision and name in ("SwinTransformer", "ConvNeXt"):
        features = getattr(inner, "features", None)
        if isinstance(features, nn.Sequential) and len(features) > 5:
            return f"{prefix}features.5"
    return None
