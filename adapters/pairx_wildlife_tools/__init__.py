"""PAIR-X for wildlife-tools pipelines: explained top-k matches next to the usual predictions.

Three ways in (see docs/wildlife_tools.md):

- :class:`PairXKnnClassifier`, a drop-in ``KnnClassifier`` whose ``.records`` hold the explanations;
- :func:`explain_similarity` for a similarity matrix (0.0.9 dict or 1.x array);
- ``method: PairXKnnClassifier`` with a ``pairx:`` section in a config built by
  ``wildlife_tools.tools.realize``. Importing this package registers that name (idempotently);
  :func:`register` does the same explicitly.
"""
from __future__ import annotations

from .classifier import ExplainedPredictions, PairXKnnClassifier
from .explain import explain_candidates, explain_similarity
from .images import DatasetImageSource
from .registry import register
from .topk import RankedCandidate, from_topk_classifier, similarity_matrix, top_k
from .translate import records_from_candidates, records_to_frame

register()

__all__ = [
    "PairXKnnClassifier",
    "ExplainedPredictions",
    "explain_similarity",
    "explain_candidates",
    "DatasetImageSource",
    "register",
    "RankedCandidate",
    "similarity_matrix",
    "top_k",
    "from_topk_classifier",
    "records_from_candidates",
    "records_to_frame",
]
