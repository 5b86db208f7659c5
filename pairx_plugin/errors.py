"""Exception types raised by pairx_plugin.

Every error a user can cause derives from :class:`PairXError`, so a host pipeline can catch one
type. Messages name the bad input and say what to do next.
"""
from __future__ import annotations


class PairXError(Exception):
    """Base class of every pairx_plugin error."""


class InvalidInputError(PairXError, ValueError):
    """An argument (tensor, k value, candidate list, image, record) is not usable."""


class LayerNotFoundError(PairXError, KeyError):
    """A layer key does not name a submodule of the model."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class UnsupportedModelError(PairXError, TypeError):
    """No relevance backend supports this model architecture."""


class ConfigError(PairXError, ValueError):
    """A configuration value or key is invalid."""


class ArtifactError(PairXError, OSError):
    """Writing or reading an explanation artifact failed."""
