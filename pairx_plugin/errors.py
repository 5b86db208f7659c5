"""Exception types raised by pairx_plugin.

Every error a user can cause derives from :class:`PairXError`, so a host pipeline can catch one
type. Messages name the bad input and say what to do next.
"""

from __future__ import annotations


class PairXError(Exception):
    """Base class of every pairx_plugin error.

    Declared context fields, set by the engine where it knows them (never ad-hoc attributes):

    * ``stage``: the step that failed (``forward``, ``relevance``, ``match``, ``pixels``, or a hook
      stage such as ``load`` / ``artifact``); ``None`` where unknown.
    * ``candidate_index``: in a query, the index of the candidate whose input caused the failure.
    * ``is_query``: the query image itself caused the failure (every candidate of it fails).
    """

    stage: str | None
    candidate_index: int | None
    is_query: bool

    def __init__(
        self, *args: object, stage: str | None = None, candidate_index: int | None = None, is_query: bool = False
    ) -> None:
        super().__init__(*args)
        self.stage = stage
        self.candidate_index = candidate_index
        self.is_query = is_query

    @classmethod
    def wrap(cls, exc: BaseException, *, stage: str) -> PairXError:
        """A :class:`PairXError` for a foreign exception raised inside ``stage`` (kept as ``__cause__``)."""
        if isinstance(exc, PairXError):
            if exc.stage is None:
                exc.stage = stage
            return exc
        wrapped = StepError(f"{type(exc).__name__}: {exc}", stage=stage)
        wrapped.__cause__ = exc
        return wrapped


class StepError(PairXError, RuntimeError):
    """A non-pairx exception (torch, numpy, a model's own code) raised inside an engine step."""


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
