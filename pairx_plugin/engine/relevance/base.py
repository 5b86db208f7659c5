"""The relevance-backend protocol.

A backend turns autograd into a relevance propagator for one family of models. The engine never
knows which rules run: it enters ``backend.context(model)``, runs an ordinary forward, and asks
autograd for gradients between tensors. The backend says how a relevance becomes a gradient seed
(``seed``) and how a gradient read at a tensor becomes relevance (``relevance``):

* LRP backends (zennit): the gradient *is* the relevance, so both are the identity.
* gradient x input backends: relevance = gradient * activation, so the seed is relevance / activation.

``run(model)`` is the engine's entry: it yields a :class:`RelevanceRun`, the module to call plus the
per-forward bookkeeping of that one context (a clock, caches to free). Everything that changes while
explanations run lives in that object, owned by the call; a backend instance holds only settings
(``mode``, ``optimised``), so one instance may serve any number of threads. ``context(model)`` yields
just the module (for callers that need no bookkeeping).

Both must always undo everything they did (hooks, patched forwards, merged parameters), also when the
body raises.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn


def _no_clock() -> int:
    return 0


def _keep_everything(tick: int) -> None:
    return None


def _ignore_rows(representatives: Sequence[int] | None) -> None:
    return None


@dataclass(frozen=True)
class RelevanceRun:
    """One entered backend context: the module to call and that context's own bookkeeping.

    ``clock()`` gives a position in the current forward (backends that cache per module use it);
    ``release_after(tick)`` frees what the context keeps for modules that ran after ``tick``.
    ``declare_rows(representatives)`` tells the context, before a forward, that row i of the coming
    batch is the same image as row ``representatives[i]`` (None: every row distinct); a backend that
    computes per-forward constants may then compute them once per distinct image.
    """

    module: nn.Module
    clock: Callable[[], int] = _no_clock
    release_after: Callable[[int], None] = _keep_everything
    declare_rows: Callable[[Sequence[int] | None], None] = _ignore_rows


class RelevanceBackend(abc.ABC):
    """One way of propagating relevance through a model with autograd.

    ``optimised=False`` asks a backend with a fast path for its straightforward one (same numbers,
    slower; tests compare the two). Backends without a fast path ignore it.
    """

    #: short stable name, recorded in every artifact
    name: str = "abstract"

    def __init__(self, mode: str = "conservative", optimised: bool = True) -> None:
        self.mode = mode
        self.optimised = bool(optimised)

    @classmethod
    @abc.abstractmethod
    def supports(cls, model: nn.Module) -> bool:
        """True when this backend can explain ``model`` (decided by inspecting its modules)."""

    @abc.abstractmethod
    def context(self, model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
        """Install the backend's rules on ``model``; yield the module to call; undo on exit."""

    @contextlib.contextmanager
    def run(self, model: nn.Module) -> Iterator[RelevanceRun]:
        """Enter :meth:`context` and yield a :class:`RelevanceRun` (default: no bookkeeping)."""
        with self.context(model) as module:
            yield RelevanceRun(module)

    def seed(self, relevance: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
        """The ``grad_outputs`` that inject ``relevance`` at a tensor holding ``activation``."""
        return relevance

    def relevance(self, grad: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
        """Relevance at a tensor, from the gradient autograd computed there."""
        return grad


@contextlib.contextmanager
def nothing_to_install(model: nn.Module) -> Iterator[nn.Module]:
    """A context for backends that need no change to the model."""
    yield model
