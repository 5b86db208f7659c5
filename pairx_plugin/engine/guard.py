"""Leave the model exactly as it was: mode, requires_grad, .grad, hooks, attributes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


def _hook_counts(model: nn.Module) -> list[tuple[int, ...]]:
    return [
        (
            len(m._forward_hooks),
            len(m._forward_pre_hooks),
            len(m._backward_hooks),
            len(getattr(m, "_backward_pre_hooks", {})),
        )
        for m in model.modules()
    ]


@contextlib.contextmanager
def model_guard(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with frozen parameters for the body; restore everything on exit.

    Freezing parameters means no weight gradient is ever computed (explanations need input and
    activation gradients only). On exit the training flag, every ``requires_grad`` and every
    existing ``.grad`` are restored, and any attribute or hook the body left on a module is removed.
    """
    training = {m: m.training for m in model.modules()}
    requires = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    attrs = {m: set(m.__dict__) for m in model.modules()}
    hooks = _hook_counts(model)
    try:
        model.eval()
        for p, _, _ in requires:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag, grad in requires:
            p.requires_grad_(flag)
            p.grad = grad
        for m, flag in training.items():
            m.training = flag
        for m, before in attrs.items():
            for extra in set(m.__dict__) - before:
                delattr(m, extra)
        if _hook_counts(model) != hooks:  # pragma: no cover - a bug in a backend's cleanup
            raise RuntimeError("pairx_plugin left hooks on the model; this is a bug, please report it")
