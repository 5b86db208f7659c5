"""The relevance-backend protocol.

A backend turns autograd into a relevance propagator for one family of models. The engine never
knows which rules run: it enters ``backend.context(model)``, runs an ordinary forward, and asks
autograd for gradients between tensors. The backend says how a relevance becomes a gradient seed
(``seed``) and how a gradient read at a tensor becomes relevance (``relevance``):

* LRP backends (zennit): the gradient *is* the relevance, so both are the identity.
* gradient x input backends: relevance = gradient * activation, so the seed is relevance / activation.

``context`` must always undo everything it did (hooks, patched forwards, merged parameters), also
when the body raises.
"""
from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class RelevanceBackend(abc.ABC):
    """One way of propagating relevance through a model with autograd."""

    #: short stable name, recorded in every artifact
    name: str = "abstract"

    def __init__(self, mode: str = "conservative") -> None:
        self.mode = mode

    @classmethod
    @abc.abstractmethod
    def supports(cls, model: nn.Module) -> bool:
        """True when this backend can explain ``model`` (decided by inspecting its modules)."""

    @abc.abstractmethod
    def context(self, model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
        """Install the backend's rules on ``model``; yield the module to call; undo on exit."""

    def seed(self, relevance: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
        """The ``grad_outputs`` that inject ``relevance`` at a tensor holding ``activation``."""
        return relevance

    def relevance(self, grad: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
        """Relevance at a tensor, from the gradient autograd computed there."""
        return grad

    def clock(self) -> int:
        """A position in the current forward (backends that cache per module use it to free memory)."""
        return 0

    def release_after(self, tick: int) -> None:
        """Free what the backend keeps for modules that ran after ``tick`` (default: nothing kept)."""


@contextlib.contextmanager
def nothing_to_install(model: nn.Module) -> Iterator[nn.Module]:
    """A context for backends that need no change to the model."""
    yield model
