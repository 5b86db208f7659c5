"""zennit rule hooks that run each module's modified forward once per forward pass, not once per
backward pass.

zennit's ``BasicHook`` re-runs the module with modified parameters inside every backward call.
LRP rules are linear in the incoming relevance once the forward is fixed, so the modified outputs
(z⁺, z⁻, …) are the same for every seed back-projected through one forward: we build each term on
first use after a forward, keep its graph, and reuse it (``retain_graph``) for every further seed.
Results are identical; each extra seed costs only the transposed operations.

Rules written for this (see :mod:`.zennit_rules`) implement ``map_gradient(module, out_grad)``
returning ``{term: grad_output}`` for the terms that contribute, building terms lazily through
``self.term(module, t)``; a term that is not needed (no negative input, no dead unit) is never
built. zennit's own rules keep their ``gradient_mapper`` and build all terms.
"""
from __future__ import annotations

import torch
from zennit.core import BasicHook, ParamMod


class CachedForwardHook:
    """Mixin placed before ``BasicHook`` in the MRO of a rule class."""

    def forward(self, module, input, output):
        self.stored_tensors.clear()
        self.stored_tensors["input"] = input
        self.stored_tensors["terms"] = {}

    def term(self, module, t: int):
        """(modified input, modified output, transposed 1×1 weight or None) of term ``t``."""
        terms = self.stored_tensors["terms"]
        if t not in terms:
            original = self.stored_tensors["input"][0].detach()
            pointwise = _is_pointwise_conv(module)
            inp = self.input_modifiers[t](original).requires_grad_(not pointwise)
            with ParamMod.ensure(self.param_modifiers[t])(module) as modified, torch.autograd.enable_grad():
                out = self.output_modifiers[t](modified.forward(inp))
                weight = modified.weight.detach().transpose(0, 1).contiguous() if pointwise else None
            terms[t] = (inp, out.detach() if pointwise else out, weight)
        return terms[t]

    def once(self, key: str, compute):
        """A per-forward constant, computed on first use."""
        if key not in self.stored_tensors:
            self.stored_tensors[key] = compute()
        return self.stored_tensors[key]

    def backward(self, module, grad_input, grad_output):
        out_grad = grad_output[0]
        if hasattr(self, "map_gradient"):
            grad_outputs = self.map_gradient(module, out_grad)
        else:
            outputs = [self.term(module, t)[1] for t in range(len(self.input_modifiers))]
            mapped = self.gradient_mapper(out_grad, outputs)
            mapped = [mapped] if isinstance(mapped, torch.Tensor) else mapped
            grad_outputs = {t: g for t, g in enumerate(mapped) if g is not None}
        relevance = None
        autograd_terms = []
        for t, g in grad_outputs.items():
            inp, out, weight = self.term(module, t)
            if weight is not None:  # 1×1 conv: the transposed op is a 1×1 conv with the transposed weight
                relevance = _accumulate(relevance, inp, torch.nn.functional.conv2d(g, weight))
            else:
                autograd_terms.append((inp, out, _like_layout(g, out)))
        if autograd_terms:
            grads = torch.autograd.grad(
                [o for _, o, _ in autograd_terms], [i for i, _, _ in autograd_terms],
                grad_outputs=[g for _, _, g in autograd_terms],
                retain_graph=True, create_graph=out_grad.requires_grad,
            )
            for (inp, _, _), grad in zip(autograd_terms, grads):
                relevance = _accumulate(relevance, inp, grad)
        if relevance is None:
            relevance = torch.zeros_like(self.stored_tensors["input"][0])
        return tuple(relevance if original.shape == relevance.shape else None for original in grad_input)


def _accumulate(total, inp: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    term = inp * _like_layout(grad, inp)
    return term if total is None else total + term


def _like_layout(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Give a gradient the memory layout of the tensor it pairs with: mixed layouts send CPU
    convolution backward and elementwise products down slow generic paths."""
    if grad.ndim == 4 and like.ndim == 4 and like.is_contiguous(memory_format=torch.channels_last):
        return grad.contiguous(memory_format=torch.channels_last)
    return grad


def _is_pointwise_conv(module) -> bool:
    return (
        isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1) and module.stride == (1, 1)
        and module.padding in ((0, 0), "valid") and module.groups == 1 and module.dilation == (1, 1)
    )


_CACHED_CLASSES: dict[type, type] = {}


def cached(hook):
    """The same rule with its modified forward cached (other hooks are returned unchanged)."""
    if hook is None or not isinstance(hook, BasicHook) or isinstance(hook, CachedForwardHook):
        return hook
    cls = type(hook)
    if cls not in _CACHED_CLASSES:
        _CACHED_CLASSES[cls] = type(f"Cached{cls.__name__}", (CachedForwardHook, cls), {})
    clone = hook.copy()
    clone.__class__ = _CACHED_CLASSES[cls]
    return clone
