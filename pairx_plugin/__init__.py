"""pairx-plugin: PAIR-X explanations for animal re-identification matches.

Public names: :class:`PairX` (the engine), :func:`list_layers`, :class:`PairXConfig`,
:class:`MatchRecord`, :func:`explain_matches` (the post-matching hook). Names outside the engine
are imported on first use, so ``import pairx_plugin`` stays light.
"""
from __future__ import annotations

import importlib

from .engine import PairX, PairExplanation, default_layer_key, list_layers
from .errors import PairXError

from .versions import __version__

_LAZY = {
    "PairXConfig": "pairx_plugin.config",
    "load_config": "pairx_plugin.config",
    "MatchRecord": "pairx_plugin.records",
    "explain_matches": "pairx_plugin.hook",
    "ArtifactStore": "pairx_plugin.artifacts.store",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pairx_plugin' has no attribute {name!r}")


__all__ = ["PairX", "PairExplanation", "PairXError", "list_layers", "default_layer_key", "__version__", *_LAZY]
