"""LRP for BatchNorm CNNs with zennit's EpsilonPlus composite (ZPlus on convolutions, Epsilon on
linear layers, pass-through on activations and batch norms).

Two modes:

* ``conservative`` (default): biases excluded from the rules and the conserving canonization of
  :mod:`.canonizers` (BatchNorm merged wherever a conv feeds it, residual sums split by
  contribution, squeeze-excite gates constant, GeM pooled by share). Relevance is conserved
  (sum at the layer / sum at the embedding ≈ 1) on every supported family.
* ``parity``: what the published PAIR-X implementation runs — EpsilonPlus with default
  parameters and its canonizers: zennit's ``ResNetCanonizer`` for torchvision ResNet, a leaf-order
  BatchNorm merge for timm models (which merges nothing on timm EfficientNets, whose
  ``BatchNormAct2d`` is not a leaf) and plain residual additions. Not conserving; kept so results
  can be compared with the published ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn
from zennit.composites import EpsilonPlus
from zennit.core import Hook
from zennit.types import Activation

from ...errors import UnsupportedModelError
from ..families import FAMILIES, family_of, has_norm_or_attention
from .base import RelevanceBackend, RelevanceRun
from .cached_hooks import HookSession, cached
from .canonizers import conserving_canonization
from .zennit_rules import EpsilonRule, ZPlusRule


class ConservingEpsilonPlus(EpsilonPlus):
    """EpsilonPlus with biases excluded from the rules, made conserving.

    ZPlus on every convolution and Epsilon on linear layers, as in EpsilonPlus, but each rule hands
    the relevance of units with no bias-free contribution to split it by to their inputs evenly
    (see :mod:`.zennit_rules`). Without that, a depthwise filter whose taps are all non-positive
    once BatchNorm is merged has no positive contribution anywhere and ZPlus drops its channel's
    relevance: two thirds of the relevance entering EfficientNet-Lite0's last stage (ImageNet
    weights) was lost. (Epsilon on depthwise convolutions conserves too, but its ratios oscillate in
    sign: summed |R| at ``blocks.3`` was 30× the signed sum. With ZPlus it equals it.)
    """

    def __init__(self, epsilon: float = 1e-6, stabilizer: float = 1e-6) -> None:
        super().__init__(epsilon=epsilon, stabilizer=stabilizer, zero_params=["bias"])
        self._zplus = ZPlusRule(stabilizer=stabilizer)
        self._epsilon = EpsilonRule(stabilizer=epsilon)

    def mapping(self, ctx: dict[str, Any], name: str, module: nn.Module) -> Hook | None:
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return self._zplus
        if isinstance(module, nn.Linear):
            return self._epsilon
        if isinstance(module, (Activation, nn.modules.batchnorm._BatchNorm)):
            return None  # handled by the canonization (PassThrough)
        return cached(super().mapping(ctx, name, module))


class CachedEpsilonPlus(EpsilonPlus):
    """zennit's EpsilonPlus, rules unchanged, with each modified forward computed once per forward."""

    def mapping(self, ctx: dict[str, Any], name: str, module: nn.Module) -> Hook | None:
        return cached(super().mapping(ctx, name, module))


class ZennitLRP(RelevanceBackend):
    """EpsilonPlus LRP (zennit) for ResNet / EfficientNet-style BatchNorm CNNs."""

    name = "zennit-lrp"

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
        return has_conv and not has_norm_or_attention(model)

    def context(self, model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
        return _module_of(self.run(model))

    @contextlib.contextmanager
    def run(self, model: nn.Module) -> Iterator[RelevanceRun]:
        """Install the rules; the yielded run owns the hooks' session (clock, caches, ``optimised``)."""
        session = HookSession(optimised=self.optimised)
        if self.mode == "parity":
            family = family_of(model)
            if family is None or family.parity_canonizer is None:
                supported = [f.description for f in FAMILIES if f.parity_canonizer is not None]
                raise UnsupportedModelError(
                    f"parity mode reproduces the published PAIR-X code, which supports {', '.join(supported)} "
                    f"(also wrapped as .backbone); got {type(model).__name__}. Use mode='conservative'."
                )
            composite: EpsilonPlus = CachedEpsilonPlus(canonizers=[family.parity_canonizer()])
            with composite.context(model) as modified:
                session.attach(composite.hook_refs)
                yield RelevanceRun(modified, session.clock, session.release_after, session.declare_rows)
            return
        with conserving_canonization(model) as runner:
            composite = ConservingEpsilonPlus()
            with composite.context(model):
                session.attach(composite.hook_refs)
                yield RelevanceRun(runner, session.clock, session.release_after, session.declare_rows)


@contextlib.contextmanager
def _module_of(run: contextlib.AbstractContextManager[RelevanceRun]) -> Iterator[nn.Module]:
    with run as entered:
        yield entered.module
