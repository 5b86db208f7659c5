"""Evidence that an explained match is the same animal, and the tools to measure and use it.

* :mod:`.scores`: the evidence components and the combined score of one explained pair;
* :mod:`.foreground`, :mod:`.geometry`: where the animal is; relevance-weighted geometric verification;
* :mod:`.evaluation`: AUROC (overall and within host-score bins), top-1 before/after re-ranking;
* :mod:`.calibration`: monotone calibration of a score on a labelled run;
* :mod:`.rerank`: opt-in re-ranking of each query's shortlist by host score fused with evidence;
* :mod:`.attach` (the artifact builder's one call), :mod:`.runs` (reading a run directory),
  :mod:`.plots` (ROC + reliability PNG), :mod:`.figure` (the worked-example picture).

numpy only (pydantic for the models); nothing here imports torch, an adapter or a host.
"""

from __future__ import annotations

from .models import EvidenceScores, RerankConfig, RerankInfo
from .scores import pair_evidence

__all__ = ["EvidenceScores", "RerankConfig", "RerankInfo", "pair_evidence"]
