"""Explanation artifacts: the document schema, the content-addressed store, rendering and review.

Submodules are imported on first use so that reading a schema never pulls in torch or pillow.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SCHEMA_VERSION": "schema",
    "ExplanationArtifact": "schema",
    "ManifestEntry": "schema",
    "ArtifactStore": "store",
    "fingerprint_state_dict": "store",
    "render_pair": "render",
    "write_review_page": "review",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_EXPORTS)
