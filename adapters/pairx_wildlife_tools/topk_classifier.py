"""``PairXTopkClassifier``: wildlife-tools 1.x ``TopkClassifier`` that explains as it classifies.

``TopkClassifier(database_labels, k, return_all=True)`` is the natural source of top-k match records
(labels, scores, database indices). This drop-in takes the same arguments and returns exactly what
``TopkClassifier`` returns; the explained records of the last call are in ``.records``::

    classifier = PairXTopkClassifier(database_labels, k=3, pairx={"top_k": 3}, query_dataset=query,
                                     database_dataset=database, extractor=extractor, store=store)
    predictions = classifier(similarity)

Ranks are TopkClassifier's: rank r is the best database image of the r-th best distinct label. Only
ranks below ``pairx.top_k`` are explained (the others come back as records without explanation). A
problem of the whole call (unknown layer, unsupported model) issues a ``RuntimeWarning`` and every
record carries the error; the predictions are never lost.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from pairx_plugin.config import PairXConfig, load_config
from pairx_plugin.errors import ConfigError, PairXError
from pairx_plugin.records import ExplanationErrorInfo, MatchRecord

from . import host
from .explain import explain_candidates, model_of
from .topk import from_topk_classifier, similarity_matrix
from .translate import records_from_candidates


class PairXTopkClassifier:
    """``TopkClassifier(database_labels, k=10, return_all=False)`` plus PAIR-X explanations in ``.records``.

    Explaining needs the query and database image datasets and the embedding model: ``extractor=``
    (the DeepFeatures that computed the features), ``model=``, or ``pipeline=`` (a SimilarityPipeline /
    WildFusion whose deep part is explained; records then say how the score relates to the cosine).
    """

    def __init__(
        self,
        database_labels: Any,
        k: int = 10,
        return_all: bool = False,
        *,
        pairx: Any = None,
        query_dataset: Any = None,
        database_dataset: Any = None,
        extractor: Any = None,
        model: Any = None,
        pipeline: Any = None,
        store: Any = None,
        progress: bool = True,
        run_name: str | None = None,
    ):
        self.config: PairXConfig = load_config(pairx)
        self.return_all = return_all
        # pandas 3 gives labels_string as an Arrow array, which TopkClassifier cannot index
        self.classifier = host.topk_classifier_class()(np.asarray(database_labels), k=k, return_all=True)
        self.query_dataset, self.database_dataset = query_dataset, database_dataset
        self.extractor, self.model, self.pipeline = extractor, model, pipeline
        self.store, self.progress, self.run_name = store, progress, run_name
        self.records: list[MatchRecord] = []

    def __call__(self, similarity: Any) -> Any:
        matrix = similarity_matrix(similarity)
        output = self.classifier(matrix)
        self.records = self._explain(output) if self.config.enabled else []
        return output if self.return_all else output[0]

    def _explain(self, output: Any) -> list[MatchRecord]:
        missing = [n for n in ("query_dataset", "database_dataset") if getattr(self, n) is None]
        if self.extractor is None and self.model is None and self.pipeline is None:
            missing.append("extractor (or model, or pipeline)")
        if missing:
            raise ConfigError(
                f"PairXTopkClassifier needs {', '.join(missing)} to explain matches; pass them to the "
                "constructor, or set pairx.enabled: false"
            )
        candidates = from_topk_classifier(output)
        model = self.model if self.pipeline is not None else model_of(self.extractor, self.model)
        try:
            return explain_candidates(
                candidates,
                self.query_dataset,
                self.database_dataset,
                model=model,
                config=self.config,
                store=self.store,
                progress=self.progress,
                run_name=self.run_name,
                pipeline=self.pipeline,
            )
        except PairXError as exc:
            warnings.warn(f"PAIR-X could not explain these matches: {exc}", RuntimeWarning, stacklevel=3)
            error = ExplanationErrorInfo.from_exception(exc, "forward")
            records = records_from_candidates(candidates, self.query_dataset, self.database_dataset)
            return [record.with_error(error) for record in records]
