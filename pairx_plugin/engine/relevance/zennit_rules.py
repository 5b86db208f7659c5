"""zennit rules that keep relevance when a unit has no contribution to split it by.

With biases excluded, a unit whose bias-free pre-activation is zero (every input in its window is
zero, or, for ZPlus, no input contributes positively) can still carry relevance: its activation
came from its bias. The plain rules divide by ~0 and drop that relevance. These rules hand it to
the unit's inputs evenly instead (the "flat" rule, for those units only), so a pass stays conserving.
"""
from __future__ import annotations

import torch
from zennit.core import BasicHook, ParamMod, Stabilizer
from zennit.rules import ClampMod, NoMod

DEAD = 1e-12


class _Ones(ParamMod):
    """Every weight set to one (bias zero): the layer then counts the inputs of each unit."""

    def __init__(self):
        super().__init__((lambda param, _: torch.ones_like(param)), zero_params=["bias"])


def _split(out_grad: torch.Tensor, z: torch.Tensor, count: torch.Tensor, stabilizer) -> tuple[torch.Tensor, torch.Tensor]:
    dead = z.abs() <= DEAD
    live_grad = torch.where(dead, torch.zeros_like(out_grad), out_grad) / stabilizer(z)
    flat_grad = torch.where(dead, out_grad, torch.zeros_like(out_grad)) / count.clamp(min=1)
    return live_grad, flat_grad


class ZPlusFlatFallback(BasicHook):
    """ZPlus (positive contributions of positive and negative inputs), biases excluded; flat where none."""

    def __init__(self, stabilizer: float = 1e-6):
        stab = Stabilizer.ensure(stabilizer)

        def mapper(out_grad, outputs):
            live, flat = _split(out_grad, outputs[0] + outputs[1], outputs[2], stab)
            return [live, live, flat]

        super().__init__(
            input_modifiers=[lambda x: x.clamp(min=0), lambda x: x.clamp(max=0), torch.ones_like],
            param_modifiers=[ClampMod(min=0.0, zero_params=["bias"]), ClampMod(max=0.0, zero_params=["bias"]), _Ones()],
            output_modifiers=[lambda out: out] * 3,
            gradient_mapper=mapper,
            reducer=lambda inputs, grads: inputs[0] * grads[0] + inputs[1] * grads[1] + inputs[2] * grads[2],
        )


class EpsilonFlatFallback(BasicHook):
    """Epsilon (all contributions), biases excluded; flat where the bias-free pre-activation is zero."""

    def __init__(self, epsilon: float = 1e-6):
        stab = Stabilizer.ensure(epsilon)

        def mapper(out_grad, outputs):
            live, flat = _split(out_grad, outputs[0], outputs[1], stab)
            return [live, flat]

        super().__init__(
            input_modifiers=[lambda x: x, torch.ones_like],
            param_modifiers=[NoMod(zero_params=["bias"]), _Ones()],
            output_modifiers=[lambda out: out] * 2,
            gradient_mapper=mapper,
            reducer=lambda inputs, grads: inputs[0] * grads[0] + inputs[1] * grads[1],
        )
