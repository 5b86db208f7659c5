"""Conserving LRP rules (biases excluded) for zennit, fast enough to back-project many seeds.

* :class:`ZPlusRule` — positive contributions of positive and negative inputs (zennit's ZPlus).
* :class:`EpsilonRule` — all contributions (zennit's Epsilon).

Both exclude biases and both keep the relevance of units that have no bias-free contribution to
split it by (every input in the window is zero, or for ZPlus none contributes positively): such a
unit's activation came from its bias, and the plain rules would divide by ~0 and drop it. These
rules hand it to the unit's inputs evenly (the "flat" rule, for those units only), so a pass stays
conserving.

Everything that depends only on the forward — the modified outputs, the stabilised
denominators, the dead-unit mask — is computed once per forward (see :mod:`.cached_hooks`);
each back-projected seed then costs one elementwise product and the transposed operations.
"""
from __future__ import annotations

import torch
from zennit.core import BasicHook, ParamMod
from zennit.rules import ClampMod, NoMod

from .cached_hooks import CachedForwardHook, sum_present
from .lrp_functions import stabilize

DEAD = 1e-12


class _Ones(ParamMod):
    """Every weight set to one (bias zero): the layer then counts the inputs of each unit."""

    def __init__(self):
        super().__init__((lambda param, _: torch.ones_like(param)), zero_params=["bias"])


class _FlatFallbackRule(CachedForwardHook, BasicHook):
    """Common part: ``n_terms`` contribution passes plus one counting pass used for dead units."""

    n_terms = 1

    def __init__(self, input_modifiers, param_modifiers, stabilizer: float = 1e-6):
        self.stabilizer = stabilizer
        super().__init__(
            input_modifiers=[*input_modifiers, torch.ones_like],
            param_modifiers=[*param_modifiers, _Ones()],
            output_modifiers=[lambda out: out] * (len(input_modifiers) + 1),
            gradient_mapper=self._map_gradient,
            reducer=sum_present,
        )

    def copy(self):
        return type(self)(stabilizer=self.stabilizer)

    def prepare(self, outputs):
        """Per-forward constants: 1/stabilised denominator (0 at dead units), flat share, any dead."""
        z = sum(outputs[: self.n_terms])
        dead = z.abs() <= DEAD
        inverse = 1.0 / stabilize(z, self.stabilizer)
        if not bool(dead.any()):
            return inverse, None
        inverse = torch.where(dead, torch.zeros_like(inverse), inverse)
        flat = dead.to(z.dtype) / outputs[self.n_terms].clamp(min=1)
        return inverse, flat

    def term_used(self, term: int) -> bool:
        return True

    def _map_gradient(self, out_grad, outputs):
        inverse, flat = self.prepared(outputs)
        live = out_grad * inverse
        terms = [live if self.term_used(t) else None for t in range(self.n_terms)]
        return terms + [None if flat is None else out_grad * flat]


class ZPlusRule(_FlatFallbackRule):
    """Term 0: positive inputs × positive weights; term 1: negative inputs × negative weights.

    After a ReLU the input has no negative entry, so term 1 is zero and its backward is skipped.
    """

    n_terms = 2

    def term_used(self, term: int) -> bool:
        if term == 0:
            return True
        if "has_negative_input" not in self.stored_tensors:
            self.stored_tensors["has_negative_input"] = bool((self.stored_tensors["input"][0] < 0).any())
        return self.stored_tensors["has_negative_input"]

    def __init__(self, stabilizer: float = 1e-6):
        super().__init__(
            input_modifiers=[lambda x: x.clamp(min=0), lambda x: x.clamp(max=0)],
            param_modifiers=[ClampMod(min=0.0, zero_params=["bias"]), ClampMod(max=0.0, zero_params=["bias"])],
            stabilizer=stabilizer,
        )


class EpsilonRule(_FlatFallbackRule):
    n_terms = 1

    def __init__(self, stabilizer: float = 1e-6):
        super().__init__(
            input_modifiers=[lambda x: x],
            param_modifiers=[NoMod(zero_params=["bias"])],
            stabilizer=stabilizer,
        )
