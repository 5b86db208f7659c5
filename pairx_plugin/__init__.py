"""pairx-plugin: PAIR-X explanations for animal re-identification matches.

Public names: :class:`PairX` (the engine), :func:`list_layers`, :class:`PairXConfig`,
:class:`MatchRecord`, :func:`explain_matches` (the post-matching hook). Every name is imported on
first use (PEP 562), so ``import pairx_plugin`` — and reading a schema or a record — never imports
torch.
"""

from __future__ import annotations

from ._lazy import lazy_attributes
from .errors import PairXError
from .versions import __version__

_LAZY = {
    "PairX": ".engine",
    "PairExplanation": ".engine",
    "default_layer_key": ".engine",
    "list_layers": ".engine",
    "PairXConfig": ".config",
    "load_config": ".config",
    "MatchRecord": ".records",
    "explain_matches": ".hook",
    "ArtifactStore": ".artifacts.store",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())

__all__ = ["PairXError", "__version__", *_LAZY]
