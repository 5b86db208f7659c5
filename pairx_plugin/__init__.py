"""pairx-plugin: PAIR-X explanations for animal re-identification matches.

Public names: :class:`PairX` (the engine), :func:`list_layers`, :class:`PairXConfig`,
:class:`MatchRecord`, :func:`explain_matches` (the post-matching hook). Every name is imported on
first use (PEP 562), so ``import pairx_plugin`` — and reading a schema or a record — never imports
torch.
"""
from __future__ import annotations

import importlib
from typing import Any

from .errors import PairXError
from .versions import __version__

_LAZY = {
    "PairX": "pairx_plugin.engine",
    "PairExplanation": "pairx_plugin.engine",
    "default_layer_key": "pairx_plugin.engine",
    "list_layers": "pairx_plugin.engine",
    "PairXConfig": "pairx_plugin.config",
    "load_config": "pairx_plugin.config",
    "MatchRecord": "pairx_plugin.records",
    "explain_matches": "pairx_plugin.hook",
    "ArtifactStore": "pairx_plugin.artifacts.store",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'pairx_plugin' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = ["PairXError", "__version__", *_LAZY]
