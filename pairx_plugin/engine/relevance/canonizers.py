"""Conserving canonization for BatchNorm CNNs, found by inspecting the model (no per-class code).

* BatchNorm merge: a tracing forward records which convolution/linear output feeds each BatchNorm
  (timm's ``BatchNormAct2d`` included, which zennit's leaf-order merge misses); each such pair is
  merged with zennit's ``MergeBatchNorm`` and restored on exit.
* Residual sums: while the model runs, a ``TorchFunctionMode`` turns every addition of two
  same-shape tensors that are both part of the graph (the skip connections of ResNet and MBConv
  blocks, in-place ``+=`` included) into :class:`SumRule`.
* Squeeze-excite: the gate multiplying the block input is treated as a constant
  (:class:`SignalOnlyGate`).
* GeM pooling: :class:`PowerMeanPoolRule`.
* BatchNorms (merged ones reduced to their exact identity scale) and activations pass relevance
  unchanged through :class:`PassThrough`, so they need no zennit hook (each hook costs copies).

Everything is undone when the context exits, also on error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator
from typing import Any, cast

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle
from zennit.canonizers import MergeBatchNorm
from zennit.types import Activation

from ..families import GATE_NAMES, is_gem_pool, is_squeeze_excite
from ..modelinfo import model_device
from .lrp_functions import PassThrough, PowerMeanPoolRule, SignalOnlyGate, SumRule

_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_ADD_FUNCS = {
    torch.add,
    torch.Tensor.add,
    torch.Tensor.__add__,
    torch.Tensor.__radd__,
    torch.Tensor.__iadd__,
    torch.Tensor.add_,
}


class _PairMerge(MergeBatchNorm):
    """zennit's parameter merge for one known (linear, batch norm) pair."""

    def apply(self, root_module: nn.Module) -> list[MergeBatchNorm]:
        return []  # the pairs are found by tracing, not by zennit's search


def _bn_pairs(model: nn.Module, sample: torch.Tensor) -> list[tuple[nn.Module, _BatchNorm]]:
    """(linear, batch_norm) pairs where the linear's output is exactly the batch norm's input."""
    producer: dict[int, tuple[nn.Module, object]] = {}  # id(output) -> (linear, output)
    pairs: list[tuple[nn.Module, _BatchNorm]] = []
    seen: set[int] = set()
    handles: list[RemovableHandle] = []

    def after_linear(module: nn.Module, args: tuple[Any, ...], output: object) -> None:
        producer[id(output)] = (module, output)

    def before_bn(module: _BatchNorm, args: tuple[Any, ...]) -> None:
        found = producer.get(id(args[0]))
        if found is not None and found[1] is args[0] and id(module) not in seen:
            seen.add(id(module))
            pairs.append((found[0], module))

    try:
        for module in model.modules():
            if isinstance(module, _LINEAR):
                handles.append(module.register_forward_hook(after_linear))
            elif isinstance(module, _BatchNorm) and module.track_running_stats and module.weight is not None:
                handles.append(module.register_forward_pre_hook(before_bn))
        with torch.no_grad():
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
    return pairs


@contextlib.contextmanager
def _patched_forward(module: nn.Module, forward: Callable[..., torch.Tensor]) -> Iterator[None]:
    module.forward = forward
    try:
        yield
    finally:
        del module.forward


def _se_forward(module: nn.Module) -> Callable[..., torch.Tensor]:
    original = type(module).forward.__get__(module)
    gate_module: nn.Module = next(
        getattr(module, g) for g in GATE_NAMES if isinstance(getattr(module, g, None), nn.Module)
    )

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        captured: dict[str, torch.Tensor] = {}
        handle = gate_module.register_forward_hook(lambda m, a, out: captured.__setitem__("gate", out))
        try:
            original(x, *args, **kwargs)
        finally:
            handle.remove()
        return cast(torch.Tensor, SignalOnlyGate.apply(x, captured["gate"]))

    return forward


def _merged_bn_forward(module: _BatchNorm) -> Callable[[torch.Tensor], torch.Tensor]:
    """A merged BatchNorm computes x / sqrt(1 + eps); then (timm BatchNormAct2d) drop and act."""
    scale = float(1.0 / (1.0 + module.eps) ** 0.5)
    tail = [m for m in (getattr(module, "drop", None), getattr(module, "act", None)) if isinstance(m, nn.Module)]

    def plain(x: torch.Tensor) -> torch.Tensor:
        x = x * scale
        for m in tail:
            x = m(x)
        return x

    return lambda x: PassThrough.apply(x, plain)


def _pass_forward(module: nn.Module) -> Callable[..., torch.Tensor]:
    original = type(module).forward.__get__(module)
    return lambda x, *a, **k: PassThrough.apply(x, lambda t: original(t, *a, **k))


def _gem_forward(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        # GeM modules hold ``p`` as a Parameter or as a plain number (``is_gem_pool`` checked it exists)
        exponent = cast("torch.Tensor | float", module.p)
        p = exponent if isinstance(exponent, torch.Tensor) else torch.tensor(float(exponent), device=x.device)
        out = PowerMeanPoolRule.apply(x, p, float(getattr(module, "eps", 1e-6)))
        return cast(torch.Tensor, out)

    return forward


class ResidualSumMode(TorchFunctionMode):
    """Routes additions of two same-shape graph tensors through :class:`SumRule`."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Collection[type],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in _ADD_FUNCS and len(args) == 2 and not kwargs:
            a, b = args
            if (
                isinstance(a, torch.Tensor)
                and isinstance(b, torch.Tensor)
                and a.shape == b.shape
                and a.ndim >= 2
                and a.requires_grad
                and b.requires_grad
            ):
                return SumRule.apply(a, b)
        return func(*args, **kwargs)


class RunWithMode(nn.Module):
    """Calls ``model`` with a TorchFunctionMode active for the forward only (never the backward)."""

    def __init__(self, model: nn.Module, mode_factory: Callable[[], TorchFunctionMode]) -> None:
        super().__init__()
        self.wrapped = [model]  # a list, so the model is not registered as a child
        self.mode_factory = mode_factory

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with self.mode_factory():
            return self.wrapped[0](*args, **kwargs)


@contextlib.contextmanager
def conserving_canonization(model: nn.Module, sample_sizes: tuple[int, ...] = (64, 224)) -> Iterator[nn.Module]:
    """Apply the conserving canonization to ``model``; yield the callable to run it with.

    The BatchNorm pairs are traced with a small zero image; a model that only accepts a larger
    input (a fixed-size classifier head, say) is traced at the next size.
    """
    for size in sample_sizes:
        try:
            pairs = _bn_pairs(model, torch.zeros(1, 3, size, size, device=model_device(model)))
            break
        except RuntimeError:
            if size == sample_sizes[-1]:
                raise
    merged = {id(bn): bn for _, bn in pairs}
    with contextlib.ExitStack() as stack:
        for linear, bn in pairs:
            merger = _PairMerge()
            merger.register([linear], bn)
            stack.callback(merger.remove)
        forward: Callable[..., torch.Tensor]
        for module in model.modules():
            if is_squeeze_excite(module):
                forward = _se_forward(module)
            elif is_gem_pool(module):
                forward = _gem_forward(module)
            elif id(module) in merged:
                forward = _merged_bn_forward(merged[id(module)])  # the same object, typed as a BatchNorm
            elif isinstance(module, (_BatchNorm, Activation)):
                forward = _pass_forward(module)
            else:
                continue
            stack.enter_context(_patched_forward(module, forward))
        yield RunWithMode(model, ResidualSumMode)
