"""Forward hooks as context managers that always remove themselves."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn


class StopForward(Exception):
    """Raised from a hook to end a forward early, once every wanted layer output exists."""


@contextlib.contextmanager
def capture_outputs(
    modules: dict[str, nn.Module], stop_after: set[str] | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """Record each module's output under its key while the context is open.

    With ``stop_after``, the forward raises :class:`StopForward` as soon as all those keys have
    an output, so no work is done past the deepest layer needed. The caller catches it.
    """
    outputs: dict[str, torch.Tensor] = {}
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def make_hook(key: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
            outputs[key] = output
            if stop_after is not None and stop_after.issubset(outputs):
                raise StopForward

        return hook

    try:
        for key, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(key)))
        yield outputs
    finally:
        for handle in handles:
            handle.remove()
