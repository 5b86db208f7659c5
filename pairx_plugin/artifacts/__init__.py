"""Explanation artifacts: the document schema, building one, the content-addressed store, rendering, review.

A leaf of the package: nothing here imports the hook, and only ``build``/``render`` touch engine
results. Submodules are imported on first use (PEP 562), so that reading a schema never pulls in
torch or pillow (``tests/test_layering.py`` checks it).
"""

from __future__ import annotations

from .._lazy import lazy_attributes

_EXPORTS = {
    "SCHEMA_VERSION": ".schema",
    "ExplanationArtifact": ".schema",
    "ManifestEntry": ".schema",
    "build_artifact": ".build",
    "store_pair": ".build",
    "ArtifactStore": ".store",
    "fingerprint_state_dict": ".store",
    "read_manifest": ".store",
    "render_pair": ".render",
    "write_review_page": ".review",
}

__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS, globals())

__all__ = list(_EXPORTS)
