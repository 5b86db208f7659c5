"""Conserving LRP rules (biases excluded) for zennit, fast enough to back-project many seeds.

* :class:`ZPlusRule` — positive contributions of positive and negative inputs (zennit's ZPlus).
* :class:`EpsilonRule` — all contributions (zennit's Epsilon).

Both exclude biases and both keep the relevance of units that have no bias-free contribution to
split it by (every input in the window is zero, or for ZPlus none contributes positively): such a
unit's activation came from its bias, and the plain rules would divide by ~0 and drop it. These
rules hand it to the unit's inputs evenly (the "flat" rule, for those units only), so a pass stays
conserving.

Everything that depends only on the forward — the modified outputs, the stabilised
denominators, the dead-unit mask — is computed once per forward (see :mod:`.cached_hooks`), and
terms that cannot contribute are never built; each back-projected seed then costs one elementwise
product and the transposed operations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import cast

import torch
from torch import nn
from zennit.core import BasicHook, ParamMod
from zennit.rules import ClampMod, NoMod

from .cached_hooks import CachedForwardHook
from .lrp_functions import stabilize

DEAD = 1e-12


class _Ones(ParamMod):
    """Every weight set to one (bias zero): the layer then counts the inputs of each unit."""

    def __init__(self) -> None:
        super().__init__((lambda param, _: torch.ones_like(param)), zero_params=["bias"])


class _FlatFallbackRule(CachedForwardHook, BasicHook):
    """``n_terms`` contribution terms plus a counting term used only for dead units."""

    n_terms = 1
    outputs_on_distinct_rows = True

    def __init__(
        self,
        input_modifiers: Sequence[Callable[[torch.Tensor], torch.Tensor]],
        param_modifiers: Sequence[ParamMod],
        stabilizer: float = 1e-6,
    ) -> None:
        self.stabilizer = stabilizer
        super().__init__(
            input_modifiers=[*input_modifiers, torch.ones_like],
            param_modifiers=[*param_modifiers, _Ones()],
            output_modifiers=[lambda out: out] * (len(input_modifiers) + 1),
        )

    def copy(self) -> _FlatFallbackRule:
        """A fresh hook with the same settings (zennit gives every module its own copy)."""
        make: Callable[..., _FlatFallbackRule] = type(self)  # the concrete rules take ``stabilizer`` only
        return make(stabilizer=self.stabilizer)

    def used_terms(self, module: nn.Module) -> list[int]:
        return list(range(self.n_terms))

    def _denominators(self, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        """1/stabilised bias-free pre-activation (0 at dead units) and the flat share (or None).

        Computed on the batch's distinct images when the forward declared repeated rows (a query
        repeated per candidate), then spread back to every row: the same numbers, computed once.
        """
        rows = self.distinct_rows(module)
        inverse, flat = self._denominators_of_terms(module)
        if rows is None:
            return inverse, flat
        return rows.spread_back(inverse), None if flat is None else rows.spread_back(flat)

    def _denominators_of_terms(self, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        used = self.used_terms(module)
        # a tensor: ``used`` is never empty (sum's start value 0 is kept, so the numbers stay as they were)
        z = cast(torch.Tensor, sum(self.term_output(module, t) for t in used)).detach()
        self._forget_outputs(used)
        dead = z.abs() <= DEAD
        inverse = 1.0 / stabilize(z, self.stabilizer)
        if not bool(dead.any()):
            return inverse, None
        count = self.term_output(module, self.n_terms).detach()
        self._forget_outputs([self.n_terms])
        inverse = torch.where(dead, torch.zeros_like(inverse), inverse)
        return inverse, dead.to(z.dtype) / count.clamp(min=1)

    def _forget_outputs(self, terms: Iterable[int]) -> None:
        """Directly transposed terms need their modified outputs only for the denominators."""
        store = self.stored_tensors["terms"]
        for t in terms:
            inp, _out, weight = store[t]
            if weight is not None:
                store[t] = (inp, None, weight)

    def term_scales(self, module: nn.Module) -> dict[int, torch.Tensor]:
        """{term: scale}: the gradient for term t is the incoming relevance times scale_t."""
        inverse, flat = self.once("denominators", lambda: self._denominators(module))
        scales = {t: inverse for t in self.used_terms(module)}
        if flat is not None:
            scales[self.n_terms] = flat
        return scales


def _positive_part(x: torch.Tensor) -> torch.Tensor:
    """x⁺, without a copy when x has no negative entry (the usual case after a ReLU)."""
    return x.clamp(min=0) if bool((x < 0).any()) else x


class ZPlusRule(_FlatFallbackRule):
    """Term 0: positive inputs × positive weights; term 1: negative inputs × negative weights.

    After a ReLU the input has no negative entry, so term 1 is zero and is never built.
    """

    n_terms = 2

    def __init__(self, stabilizer: float = 1e-6) -> None:
        super().__init__(
            input_modifiers=[_positive_part, lambda x: x.clamp(max=0)],
            param_modifiers=[ClampMod(min=0.0, zero_params=["bias"]), ClampMod(max=0.0, zero_params=["bias"])],
            stabilizer=stabilizer,
        )

    def used_terms(self, module: nn.Module) -> list[int]:
        negative = self.once("negative", lambda: bool((self.stored_tensors["input"][0] < 0).any()))
        return [0, 1] if negative else [0]


class EpsilonRule(_FlatFallbackRule):
    n_terms = 1

    def __init__(self, stabilizer: float = 1e-6) -> None:
        super().__init__(
            input_modifiers=[lambda x: x],
            param_modifiers=[NoMod(zero_params=["bias"])],
            stabilizer=stabilizer,
        )
