"""``PairXKnnClassifier``: wildlife-tools' ``KnnClassifier`` that also explains the top-k matches.

Calling it returns exactly what the wrapped classifier returns (predictions, or ``(predictions,
scores)`` for 1.x ``return_scores=True``), so it drops into existing code; the explained
``MatchRecord``s of the last call are in ``.records``. ``predict_and_explain`` returns both at once.
Explaining never costs the predictions: when PAIR-X cannot run at all (an unknown layer key, an
unsupported model), a ``RuntimeWarning`` is issued and every top-k record carries the error.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np

from pairx_plugin.config import PairXConfig, load_config
from pairx_plugin.errors import ConfigError, PairXError
from pairx_plugin.records import ExplanationErrorInfo, MatchRecord

from . import host
from .explain import explain_similarity, model_of
from .images import image_ids
from .topk import similarity_matrix, top_k
from .translate import records_from_candidates


class ExplainedPredictions(NamedTuple):
    predictions: Any
    records: list[MatchRecord]


class PairXKnnClassifier:
    """A ``KnnClassifier`` (or any similarity -> predictions callable) plus PAIR-X explanations.

    k, database_labels and any other keyword build the installed ``wildlife_tools.inference.
    KnnClassifier`` unless ``classifier`` is given. ``pairx`` is the ``pairx:`` settings (dict,
    ``PairXConfig``, YAML/JSON). The datasets and the extractor (or model) are needed to explain;
    give them here or later with :meth:`bind` (a YAML config built through ``realize`` has no
    Python objects, so it binds afterwards).
    """

    def __init__(
        self,
        k: int = 1,
        database_labels: Any = None,
        *,
        pairx: Any = None,
        classifier: Any = None,
        query_dataset: Any = None,
        database_dataset: Any = None,
        extractor: Any = None,
        model: Any = None,
        store: Any = None,
        progress: bool = True,
        run_name: str | None = None,
        **classifier_kwargs: Any,
    ):
        self.config: PairXConfig = load_config(pairx)
        if classifier is None:
            from wildlife_tools.inference import KnnClassifier

            if database_labels is not None:
                database_labels = np.asarray(database_labels)
            classifier = KnnClassifier(k=k, database_labels=database_labels, **classifier_kwargs)
        elif classifier_kwargs:
            raise ConfigError(
                f"{sorted(classifier_kwargs)} configure the KnnClassifier this wrapper builds, but a "
                "classifier was given too; pass one or the other"
            )
        self.classifier = classifier
        self.store = store
        self.progress = progress
        self.run_name = run_name
        self.explainer: Any = None  # a hook-compatible callable instead of explain_matches (pairx_ray)
        self.records: list[MatchRecord] = []
        self.bind(query_dataset=query_dataset, database_dataset=database_dataset, extractor=extractor, model=model)

    def bind(
        self, *, query_dataset: Any = None, database_dataset: Any = None, extractor: Any = None, model: Any = None
    ) -> PairXKnnClassifier:
        """Attach the objects the explanations need; returns ``self`` for chaining."""
        self.query_dataset = query_dataset if query_dataset is not None else getattr(self, "query_dataset", None)
        self.database_dataset = (
            database_dataset if database_dataset is not None else getattr(self, "database_dataset", None)
        )
        self.extractor = extractor if extractor is not None else getattr(self, "extractor", None)
        self.model = model if model is not None else getattr(self, "model", None)
        return self

    def __call__(self, similarity: Any) -> Any:
        return self.predict_and_explain(similarity).predictions

    def predict_and_explain(self, similarity: Any) -> ExplainedPredictions:
        """The wrapped classifier's predictions and the explained top-k records of every query."""
        matrix = similarity_matrix(similarity)
        if self.config.enabled:
            self._check_bound()
        with host.known_deprecations_silenced():
            predictions = self.classifier(matrix)
        if not self.config.enabled:
            self.records = []
            return ExplainedPredictions(predictions, [])
        try:
            self.records = explain_similarity(
                matrix,
                self.query_dataset,
                self.database_dataset,
                config=self.config,
                model=model_of(self.extractor, self.model),
                store=self.store,
                progress=self.progress,
                run_name=self.run_name,
                explainer=self.explainer,
            )
        except PairXError as exc:
            # a problem of the whole call (unknown layer, unsupported model, store): the predictions
            # stand, and every top-k record says why it has no explanation
            warnings.warn(f"PAIR-X could not explain these matches: {exc}", RuntimeWarning, stacklevel=2)
            self.records = self._unexplained(matrix, exc)
        return ExplainedPredictions(predictions, self.records)

    def _unexplained(self, matrix: np.ndarray, exc: PairXError) -> list[MatchRecord]:
        error = ExplanationErrorInfo.from_exception(exc, "forward")
        candidates = top_k(
            matrix,
            self.config.top_k,
            query_ids=image_ids(self.query_dataset),
            database_ids=image_ids(self.database_dataset),
        )
        records = records_from_candidates(candidates, self.query_dataset, self.database_dataset)
        return [record.with_error(error) for record in records]

    def _check_bound(self) -> None:
        missing = [name for name in ("query_dataset", "database_dataset") if getattr(self, name) is None]
        if self.extractor is None and self.model is None:
            missing.append("extractor (or model)")
        if missing:
            raise ConfigError(
                f"PairXKnnClassifier needs {', '.join(missing)} to explain matches; call "
                ".bind(query_dataset=..., database_dataset=..., extractor=...) first, or set pairx.enabled: false"
            )

    @classmethod
    def from_config(cls, config: dict, **kwargs: Any) -> PairXKnnClassifier:
        """Build from a wildlife-tools config mapping (what ``realize`` passes, ``method`` removed).

        The ``pairx`` key is validated as ``PairXConfig`` (errors name the key, e.g. ``pairx.k_lines``);
        the other keys and ``kwargs`` (``realize(config, database_labels=...)``) go to the constructor.
        """
        config = dict(config)
        pairx = config.pop("pairx", None)
        if pairx is not None and not isinstance(pairx, (dict, PairXConfig)):
            raise ConfigError(f"pairx: must be a mapping of PAIR-X settings, got {type(pairx).__name__}")
        return cls(pairx=pairx, **config, **kwargs)
