"""Per-operation rules of the gradient x input backend, written as "value + surrogate gradient".

Every rule returns a tensor whose *value* is bit-for-bit the native operation's output and whose
*gradient* is that of a surrogate which is linear (homogeneous of degree 1) in the relevance-carrying
input. Gradient x input through a chain of such maps conserves relevance exactly (Euler's theorem):
``sum(x * dy/dx . g) == sum(y * g)`` whenever ``y`` is homogeneous of degree 1 in ``x``.

The trick that keeps values exact is ``native.detach() + (surrogate - surrogate.detach())``: the
bracket is exactly zero in floating point, yet carries the surrogate's graph. All choices (what is
detached) are made during the forward, so the backward is ordinary autograd and needs no mode.

Rules (see docs/backends.md for why each is needed):

* normalisers (layer_norm, rms_norm, group_norm, normalize): the scale (std / rms / norm) is detached.
* softmax: the output is detached (attention weights become constants).
* scaled_dot_product_attention: q, k and the mask are detached; the output stays linear in v.
* element-wise activations with f(0) = 0 (GELU, SiLU, Mish, Hardswish): identity rule,
  gradient = f(x) / x.
* linear / conv2d, optional gamma rule: positive (for positive outputs) or negative (for negative
  outputs) contributions are boosted by ``gamma``; the result is rescaled to the bias-free output,
  so relevance is still conserved and the pixel maps are less noisy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F

#: a torch function the mode intercepted (``F.layer_norm``, ``torch.Tensor.softmax``, ...)
TorchFunction = Callable[..., Any]
#: a rule: (the intercepted function, its positional and keyword arguments) -> the tensor to use instead
Rule = Callable[[TorchFunction, Sequence[Any], dict[str, Any]], torch.Tensor]


def safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` with 0 wherever the denominator is exactly 0."""
    zero = denominator == 0
    return torch.where(
        zero, torch.zeros_like(numerator), numerator / torch.where(zero, torch.ones_like(denominator), denominator)
    )


def with_surrogate_gradient(native: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """A tensor equal to ``native`` whose gradient is the gradient of ``surrogate``."""
    return native.detach() + (surrogate - surrogate.detach())


def argument(args: Sequence[Any], kwargs: dict[str, Any], index: int, name: str, default: Any = None) -> Any:
    """Positional-or-keyword argument lookup for functional calls seen by the mode."""
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


# ----------------------------------------------------------------------------- normalisers


def _as_shape(shape: Any) -> tuple[int, ...]:
    """``normalized_shape`` as a tuple (torch.Size, list or tuple; a bare int for rms_norm)."""
    return (int(shape),) if isinstance(shape, int) else tuple(shape)


def layer_norm(func: TorchFunction, args: Sequence[Any], kwargs: dict[str, Any]) -> torch.Tensor:
    native = func(*args, **kwargs)
    x = argument(args, kwargs, 0, "input")
    shape = argument(args, kwargs, 1, "normalized_shape")
    weight = argument(args, kwargs, 2, "weight")
    bias = argument(args, kwargs, 3, "bias")
    eps = argument(args, kwargs, 4, "eps", 1e-5)
    dims = tuple(range(-len(_as_shape(shape)), 0))
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, unbiased=False, keepdim=True)
    surrogate = (x - mean) / torch.sqrt(var + eps).detach()
    if weight is not None:
        surrogate = surrogate * weight
    if bias is not None:
        surrogate = surrogate + bias
    return with_surrogate_gradient(native, surrogate)


def rms_norm(func: TorchFunction, args: Sequence[Any], kwargs: dict[str, Any]) -> torch.Tensor:
    native = func(*args, **kwargs)
    x = argument(args, kwargs, 0, "input")
    shape = argument(args, kwargs, 1, "normalized_shape")
    weight = argument(args, kwargs, 2, "weight")
    eps = argument(args, kwargs, 3, "eps")
    if eps is None:
        eps = torch.finfo(x.dtype).eps
    dims = tuple(range(-len(_as_shape(shape)), 0))
    surrogate = x / torch.sqrt(x.pow(2).mean(dim=dims, keepdim=True) + eps).detach()
    if weight is not None:
        surrogate = surrogate * weight
    return with_surrogate_gradient(native, surrogate)


def group_norm(func: TorchFunction, args: Sequence[Any], kwargs: dict[str, Any]) -> torch.Tensor:
    native = func(*args, **kwargs)
    x = argument(args, kwargs, 0, "input")
    groups = argument(args, kwargs, 1, "num_groups")
    weight = argument(args, kwargs, 2, "weight")
    bias = argument(args, kwargs, 3, "bias")
    eps = argument(args, kwargs, 4, "eps", 1e-5)
    grouped = x.reshape(x.shape[0], groups, -1)
    mean = grouped.mean(dim=-1, keepdim=True)
    var = grouped.var(dim=-1, unbiased=False, keepdim=True)
    surrogate = ((grouped - mean) / torch.sqrt(var + eps).detach()).reshape(x.shape)
    affine_shape = (1, -1) + (1,) * (x.ndim - 2)
    if weight is not None:
        surrogate = surrogate * weight.reshape(affine_shape)
    if bias is not None:
        surrogate = surrogate + bias.reshape(affine_shape)
    return with_surrogate_gradient(native, surrogate)


def normalize(func: TorchFunction, args: Sequence[Any], kwargs: dict[str, Any]) -> torch.Tensor:
    native = func(*args, **kwargs)
    x = argument(args, kwargs, 0, "input")
    p = argument(args, kwargs, 1, "p", 2.0)
    dim = argument(args, kwargs, 2, "dim", 1)
    eps = argument(args, kwargs, 3, "eps", 1e-12)
    norm = x.norm(p=p, dim=dim, keepdim=True).clamp_min(eps).detach()
    return with_surrogate_gradient(native, x / norm)


# ----------------------------------------------------------------------------- attention


def softmax(func: TorchFunction, args: Sequence[Any], kwargs: dict[str, Any]) -> torch.Tensor:
    return cast(torch.Tensor, func(*args, **kwargs)).detach()


def scaled_dot_product_attention(func: TorchFunction, args: Sequence[Any], kwargs: dict[str, Any]) -> torch.Tensor:
    args = list(args)
    kwargs = dict(kwargs)
    for index, name in ((0, "query"), (1, "key"), (3, "attn_mask")):
        if len(args) > index:
            if isinstance(args[index], torch.Tensor):
                args[index] = args[index].detach()
        elif isinstance(kwargs.get(name), torch.Tensor):
            kwargs[name] = kwargs[name].detach()
    return cast(torch.Tensor, func(*args, **kwargs))


# ----------------------------------------------------------------------------- activations


def identity_rule_activation(func: TorchFunction, args: Sequence[Any], kwargs: dict[str, Any]) -> torch.Tensor:
    """Element-wise f with f(0) = 0: relevance passes through unchanged (gradient = f(x) / x)."""
    kwargs = dict(kwargs)
    if "inplace" in kwargs:
        kwargs["inplace"] = False
    args = list(args)
    if func in (F.silu, F.mish, F.hardswish) and len(args) > 1:
        args[1] = False  # the positional ``inplace``: never overwrite the input we still need
    native = func(*args, **kwargs)
    x = argument(args, kwargs, 0, "input")
    return with_surrogate_gradient(native, x * safe_divide(native, x).detach())


# ----------------------------------------------------------------------------- gamma rule


def _gamma_surrogate(
    op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, weight: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Bias-free output whose gradient x input follows the generalised gamma rule.

    ``z = W x``; positive contributions ``(w x)+`` sum to ``p``, negative ones to ``n``;
    ``z_gamma = z + gamma * (p where z > 0 else n)`` has the sign of ``z`` and ``|z_gamma| >= |z|``,
    so the rescale ``z / z_gamma`` lies in [0, 1] and never explodes.
    """
    z = op(x, weight)
    positive = op(x.clamp(min=0), weight.clamp(min=0)) + op(x.clamp(max=0), weight.clamp(max=0))
    negative = z - positive  # the bias-free output is the sum of both kinds of contribution
    z_gamma = z + gamma * torch.where(z > 0, positive, negative)
    return z_gamma * safe_divide(z, z_gamma).detach()


def make_gamma_linear(gamma: float) -> Rule:
    def gamma_linear(func: TorchFunction, args: Sequence[Any], kwargs: dict[str, Any]) -> torch.Tensor:
        native = func(*args, **kwargs)
        x = argument(args, kwargs, 0, "input")
        weight = argument(args, kwargs, 1, "weight")
        bias = argument(args, kwargs, 2, "bias")
        surrogate = _gamma_surrogate(F.linear, x, weight, gamma)
        if bias is not None:
            surrogate = surrogate + bias
        return with_surrogate_gradient(native, surrogate)

    return gamma_linear


def make_gamma_conv2d(gamma: float) -> Rule:
    def gamma_conv2d(func: TorchFunction, args: Sequence[Any], kwargs: dict[str, Any]) -> torch.Tensor:
        native = func(*args, **kwargs)
        x = argument(args, kwargs, 0, "input")
        weight = argument(args, kwargs, 1, "weight")
        bias = argument(args, kwargs, 2, "bias")
        geometry = {
            "stride": argument(args, kwargs, 3, "stride", 1),
            "padding": argument(args, kwargs, 4, "padding", 0),
            "dilation": argument(args, kwargs, 5, "dilation", 1),
            "groups": argument(args, kwargs, 6, "groups", 1),
        }
        surrogate = _gamma_surrogate(lambda a, w: F.conv2d(a, w, None, **geometry), x, weight, gamma)
        if bias is not None:
            surrogate = surrogate + bias.reshape(1, -1, 1, 1)
        return with_surrogate_gradient(native, surrogate)

    return gamma_conv2d
