"""PAIR-X for wildlife-tools pipelines: explained top-k matches next to the usual predictions.

Works with wildlife-tools 0.0.9 (PyPI) and 1.x (git); the differences live in :mod:`.host`.
Ways in (see docs/wildlife_tools.md):

- :class:`PairXKnnClassifier`, a drop-in ``KnnClassifier`` whose ``.records`` hold the explanations;
- :class:`PairXTopkClassifier` (1.x), a drop-in ``TopkClassifier`` that explains as it classifies;
- :func:`explain_similarity` for a similarity matrix (0.0.9 dict or 1.x array), also from a 1.x
  ``SimilarityPipeline`` / ``WildFusion`` (``pipeline=``);
- ``pairx-plugin run --config pipeline.yaml`` with a ``pairx:`` section (both versions);
- 0.0.9 only: ``method: PairXKnnClassifier`` with a ``pairx:`` section in a config built by
  ``wildlife_tools.tools.realize``. Importing this package registers that name (idempotently;
  a no-op on 1.x, which has no config store); :func:`register` does the same explicitly.
"""

from __future__ import annotations

from .classifier import ExplainedPredictions, PairXKnnClassifier
from .explain import explain_candidates, explain_similarity
from .images import DatasetImageSource
from .registry import register
from .topk import RankedCandidate, from_topk_classifier, similarity_matrix, top_k
from .topk_classifier import PairXTopkClassifier
from .translate import records_from_candidates, records_to_frame

register()

__all__ = [
    "DatasetImageSource",
    "ExplainedPredictions",
    "PairXKnnClassifier",
    "PairXTopkClassifier",
    "RankedCandidate",
    "explain_candidates",
    "explain_similarity",
    "from_topk_classifier",
    "records_from_candidates",
    "records_to_frame",
    "register",
    "similarity_matrix",
    "top_k",
]
