"""The ``TorchFunctionMode`` that applies the gradient x input rules while it is active.

A function mode sees every torch call made in its ``with`` block (including the ``F.*`` calls inside
timm / torchvision modules) and nothing outside it, so no function, module or class is patched. The
rules only choose, during the forward, what to detach; the backward is plain autograd, so gradients
taken after the block closes are the same as those taken inside it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from . import gxi_rules
from .gxi_rules import Rule, TorchFunction

__all__ = ["GradientXInputMode", "Rule", "TorchFunction", "base_rules", "gamma_rules"]


def base_rules() -> dict[TorchFunction, Rule]:
    """The rules every gradient x input pass uses (normalisers, attention, activations)."""
    rules: dict[TorchFunction, Rule] = {
        F.layer_norm: gxi_rules.layer_norm,
        torch.layer_norm: gxi_rules.layer_norm,
        F.group_norm: gxi_rules.group_norm,
        torch.group_norm: gxi_rules.group_norm,
        F.normalize: gxi_rules.normalize,
        F.softmax: gxi_rules.softmax,
        torch.softmax: gxi_rules.softmax,
        torch.Tensor.softmax: gxi_rules.softmax,
        F.scaled_dot_product_attention: gxi_rules.scaled_dot_product_attention,
        F.gelu: gxi_rules.identity_rule_activation,
        F.silu: gxi_rules.identity_rule_activation,
        F.mish: gxi_rules.identity_rule_activation,
        F.hardswish: gxi_rules.identity_rule_activation,
    }
    if hasattr(F, "rms_norm"):
        rules[F.rms_norm] = gxi_rules.rms_norm
    return rules


def gamma_rules(gamma: float) -> dict[TorchFunction, Rule]:
    """Gamma rule on every linear and 2-d convolution."""
    return {F.linear: gxi_rules.make_gamma_linear(gamma), F.conv2d: gxi_rules.make_gamma_conv2d(gamma)}


class GradientXInputMode(TorchFunctionMode):
    """Routes the functions named in ``rules`` to their rule; everything else runs unchanged.

    Inside ``__torch_function__`` torch has already popped this mode, so the rules' own torch
    calls run natively (no recursion).
    """

    def __init__(self, rules: dict[TorchFunction, Rule]) -> None:
        super().__init__()
        self.rules = rules
        #: how many calls each rule handled during the block (diagnostics and tests)
        self.counts: dict[str, int] = {}

    def __torch_function__(
        self,
        func: TorchFunction,
        types: Collection[type],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        rule = self.rules.get(func)
        if rule is None:
            return func(*args, **kwargs)
        name = getattr(func, "__name__", str(func))
        self.counts[name] = self.counts.get(name, 0) + 1
        return rule(func, args, kwargs)
