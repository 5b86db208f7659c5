"""Gradient x input relevance for norm / attention models (Swin, SwinV2, ViT, DINOv2, ConvNeXt, BiT).

zennit's LRP rules attach to Conv2d / Linear / activations only; LayerNorm, softmax attention and
``scaled_dot_product_attention`` leave its pass NaN. This backend instead runs an ordinary forward
under :class:`~.gxi_mode.GradientXInputMode`, which makes every normaliser and attention weight a
constant for the gradient (see ``gxi_rules``). What remains between an embedding and any layer is
piecewise linear, so relevance = gradient x activation is conserved up to the biases
(docs/backends.md gives the measured numbers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError
from ..families import NORM_CLASS_NAMES, is_attention_module, is_norm_module  # noqa: F401 - re-exported
from ..layouts import unwrap_backbone
from .base import RelevanceBackend
from .gxi_mode import GradientXInputMode, Rule, base_rules, gamma_rules
from .gxi_rules import safe_divide

LINEAR_RULES = ("gradient", "gamma")


class GradientXInput(RelevanceBackend):
    """Relevance = gradient x activation, with normalisers detached and identity-rule activations.

    ``linear_rule="gamma"`` applies the gamma rule (gradient x input form) to every ``Linear`` and
    ``Conv2d``: less pixel noise, still conserving. ``mode`` ("conservative" / "parity") is accepted
    for the engine's sake; there is no published transformer implementation to be at parity with,
    so both modes run the same rules.
    """

    name = "gradient-x-input"

    def __init__(
        self, mode: str = "conservative", linear_rule: str = "gradient", gamma: float = 0.25, optimised: bool = True
    ) -> None:
        super().__init__(mode=mode, optimised=optimised)
        if linear_rule not in LINEAR_RULES:
            raise ConfigError(f"linear_rule={linear_rule!r} is not a gradient-x-input rule; use one of {LINEAR_RULES}")
        if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not gamma >= 0 or gamma == float("inf"):
            raise ConfigError(f"gamma={gamma!r} must be a finite number >= 0 (0.25 is a good start)")
        self.linear_rule = linear_rule
        self.gamma = float(gamma)
        #: the mode of the last ``context`` (its ``counts`` say which rules fired; a diagnostic for tests
        #: and benchmarks, never read by the engine)
        self.last_mode: GradientXInputMode | None = None

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        """True for models with LayerNorm/GroupNorm/RMSNorm or timm-style attention (also under ``.backbone``).

        False for plain BatchNorm CNNs (the zennit backend explains those) and for models built on
        ``nn.MultiheadAttention``, whose fused internals a function mode cannot see.
        """
        modules = list(unwrap_backbone(model)[0].modules())
        if any(isinstance(m, nn.MultiheadAttention) for m in modules):
            return False
        return any(is_norm_module(m) or is_attention_module(m) for m in modules)

    def rules(self) -> dict[Callable[..., Any], Rule]:
        rules = base_rules()
        if self.linear_rule == "gamma":
            rules.update(gamma_rules(self.gamma))
        return rules

    @contextlib.contextmanager
    def context(self, model: nn.Module) -> Iterator[nn.Module]:
        """Activate the rules for the ``with`` body only; the model itself is never touched."""
        mode = GradientXInputMode(self.rules())
        self.last_mode = mode
        with mode:
            yield model

    def seed(self, relevance: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
        return safe_divide(relevance, activation)

    def relevance(self, grad: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
        return grad * activation


class GradientXInputGamma(GradientXInput):
    """The same backend with the gamma rule on every Linear / Conv2d, selectable by name.

    Registered names carry no options, so this subclass is how a configuration asks for the gamma
    rule (``backend: gradient-x-input-gamma``). ``backend="auto"`` never picks it.
    """

    name = "gradient-x-input-gamma"

    def __init__(
        self, mode: str = "conservative", linear_rule: str = "gamma", gamma: float = 0.25, optimised: bool = True
    ) -> None:
        super().__init__(mode=mode, linear_rule=linear_rule, gamma=gamma, optimised=optimised)
