"""zennit rule hooks that run each module's modified forward once per forward pass, not once per
backward pass.

zennit's ``BasicHook`` re-runs the module with modified parameters inside every backward call.
LRP rules are linear in the incoming relevance once the forward is fixed, so the modified outputs
(z⁺, z⁻, …) are the same for every seed back-projected through one forward: we build them on the
first backward after a forward, keep their graph, and reuse it (``retain_graph``) for every further
seed. Results are identical; each extra seed costs only the transposed operations. A rule's
gradient mapper may return ``None`` for a term that contributes nothing (the reducer then sees
``None``), so that term's backward is skipped.
"""
from __future__ import annotations

import torch
from zennit.core import BasicHook, ParamMod


class CachedForwardHook:
    """Mixin placed before ``BasicHook`` in the MRO of a rule class."""

    def forward(self, module, input, output):
        self.stored_tensors["input"] = input
        self.stored_tensors.pop("modified", None)
        self.stored_tensors.pop("prepared", None)
        self.stored_tensors.pop("has_negative_input", None)

    def prepared(self, outputs):
        """``self.prepare(outputs)`` computed once per forward (rules that define ``prepare``)."""
        if "prepared" not in self.stored_tensors:
            self.stored_tensors["prepared"] = self.prepare(outputs)
        return self.stored_tensors["prepared"]

    def _modified(self, module):
        cached = self.stored_tensors.get("modified")
        if cached is None:
            original = self.stored_tensors["input"][0].detach()
            pointwise = _is_pointwise_conv(module)
            inputs, outputs, weights = [], [], []
            for in_mod, param_mod, out_mod in zip(self.input_modifiers, self.param_modifiers, self.output_modifiers):
                inp = in_mod(original).requires_grad_(not pointwise)
                with ParamMod.ensure(param_mod)(module) as modified, torch.autograd.enable_grad():
                    out = out_mod(modified.forward(inp))
                    weights.append(modified.weight.detach().transpose(0, 1).contiguous() if pointwise else None)
                inputs.append(inp)
                outputs.append(out.detach() if pointwise else out)
            cached = self.stored_tensors["modified"] = (inputs, outputs, weights if pointwise else None)
        return cached

    def backward(self, module, grad_input, grad_output):
        inputs, outputs, pointwise_weights = self._modified(module)
        if pointwise_weights is not None:
            return self._pointwise_backward(inputs, outputs, pointwise_weights, grad_input, grad_output)
        grad_outputs = self.gradient_mapper(grad_output[0], outputs)
        if isinstance(grad_outputs, torch.Tensor):
            grad_outputs = [grad_outputs]
        used = [i for i, g in enumerate(grad_outputs) if g is not None]
        grad_outputs = [_like_layout(g, outputs[i]) if g is not None else None for i, g in enumerate(grad_outputs)]
        computed = torch.autograd.grad(
            [outputs[i] for i in used], [inputs[i] for i in used],
            grad_outputs=[grad_outputs[i] for i in used],
            retain_graph=True, create_graph=grad_output[0].requires_grad,
        )
        gradients = [None] * len(outputs)
        for i, g in zip(used, computed):
            gradients[i] = g
        relevance = self.reducer(inputs, gradients)
        return tuple(relevance if original.shape == relevance.shape else None for original in grad_input)

    def _pointwise_backward(self, inputs, outputs, weights, grad_input, grad_output):
        """1×1 convolutions: the transposed operation is a 1×1 convolution with the transposed
        weight, which runs on the fast path (autograd's backward for it does not, on CPU)."""
        grad_outputs = self.gradient_mapper(grad_output[0], outputs)
        if isinstance(grad_outputs, torch.Tensor):
            grad_outputs = [grad_outputs]
        gradients = [
            None if g is None else torch.nn.functional.conv2d(g, w)
            for g, w in zip(grad_outputs, weights)
        ]
        relevance = self.reducer(inputs, gradients)
        return tuple(relevance if original.shape == relevance.shape else None for original in grad_input)


def _like_layout(grad: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Give a gradient the memory layout of the output it belongs to: mixed layouts send CPU
    convolution backward down a slow generic path."""
    if grad.ndim == 4 and output.ndim == 4 and output.is_contiguous(memory_format=torch.channels_last):
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


def sum_present(inputs, gradients) -> torch.Tensor:
    """Reducer: sum of input × gradient over the terms that were computed."""
    total = None
    for inp, grad in zip(inputs, gradients):
        if grad is not None:
            term = inp * _like_layout(grad, inp)
            total = term if total is None else total + term
    return total
