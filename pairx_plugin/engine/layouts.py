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


class Layout:
    """Identity layout: the layer already outputs (B, C, H, W)."""

    name = "nchw"

    def to_nchw(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def from_nchw(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t


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
    LayoutRule("nchw", _is_nchw, lambda *a: Layout()),
]


def detect_layout(model: nn.Module, key: str, module: nn.Module, output: torch.Tensor) -> Layout | None:
    """The layout adapter for ``module``'s ``output``, or None if no rule understands it."""
    for rule in LAYOUT_RULES:
        if rule.matches(model, key, module, output):
            return rule.make(model, key, module, output)
    return None
