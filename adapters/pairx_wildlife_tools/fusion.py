"""The deep-feature part of a wildlife-tools 1.x ``SimilarityPipeline`` or ``WildFusion``.

PAIR-X explains a deep embedding's cosine. A ``SimilarityPipeline(matcher=CosineSimilarity(),
extractor=DeepFeatures(model), transform=...)`` scores exactly that cosine, unless a ``calibration``
maps it to a probability. A ``WildFusion`` averages several calibrated pipelines (local matchers such
as LightGlue or LoFTR next to the deep one). In both cases the explanation covers the deep-feature
cosine only; :func:`deep_part` finds that pipeline, and every record gets ``extras``
``score_kind`` (``cosine``, ``calibrated`` or ``fused``) and ``explained_score`` so that a reader of the
record knows the host's score and the explained cosine are different quantities.

``SimilarityPipeline`` assigns its ``transform`` to the datasets it is called with (in place; with
WildFusion the last pipeline's transform wins), so the images are explained through shallow copies of
the datasets carrying the deep pipeline's own transform.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from pairx_plugin.errors import InvalidInputError

ScoreKind = Literal["cosine", "calibrated", "fused"]


@dataclass(frozen=True)
class DeepPart:
    """The pipeline whose deep features PAIR-X explains, and what the host's score is relative to it."""

    extractor: Any
    transform: Any
    score_kind: ScoreKind

    @property
    def model(self) -> nn.Module:
        return self.extractor.model

    def extras(self) -> dict[str, str]:
        explained = "the DeepFeatures model's cosine similarity"
        if self.score_kind == "cosine":
            return {"score_kind": "cosine", "explained_score": explained}
        what = "a calibrated" if self.score_kind == "calibrated" else "a fused (WildFusion)"
        return {"score_kind": self.score_kind, "explained_score": f"{explained}; the host's score is {what} score"}

    def datasets(self, *datasets: Any) -> list[Any]:
        """Shallow copies of ``datasets`` carrying this pipeline's transform (the user's objects untouched)."""
        if self.transform is None:
            return list(datasets)
        copies = []
        for dataset in datasets:
            view = copy.copy(dataset)
            view.transform = self.transform
            copies.append(view)
        return copies


def _is_cosine_deep_pipeline(pipeline: Any) -> bool:
    matcher = getattr(pipeline, "matcher", None)
    extractor = getattr(pipeline, "extractor", None)
    return type(matcher).__name__ == "CosineSimilarity" and isinstance(getattr(extractor, "model", None), nn.Module)


def deep_part(pipeline: Any) -> DeepPart:
    """The ``DeepFeatures`` + ``CosineSimilarity`` pipeline inside ``pipeline`` (a SimilarityPipeline or WildFusion).

    WildFusion: the first such pipeline among ``calibrated_pipelines`` (then ``priority_pipeline``).
    Raises :class:`InvalidInputError` when there is none.
    """
    if hasattr(pipeline, "calibrated_pipelines"):
        members = list(pipeline.calibrated_pipelines or [])
        priority = getattr(pipeline, "priority_pipeline", None)
        for member in members + ([priority] if priority is not None else []):
            if _is_cosine_deep_pipeline(member):
                return DeepPart(member.extractor, getattr(member, "transform", None), "fused")
        raise InvalidInputError(
            f"this WildFusion has no pipeline with a DeepFeatures extractor and CosineSimilarity matcher "
            f"(it has {[type(getattr(m, 'matcher', None)).__name__ for m in members]}); PAIR-X explains deep "
            "embeddings, so add SimilarityPipeline(matcher=CosineSimilarity(), extractor=DeepFeatures(model))"
        )
    if hasattr(pipeline, "matcher"):
        if not _is_cosine_deep_pipeline(pipeline):
            raise InvalidInputError(
                f"SimilarityPipeline with matcher {type(pipeline.matcher).__name__} and extractor "
                f"{type(getattr(pipeline, 'extractor', None)).__name__}: PAIR-X explains a DeepFeatures "
                "model's cosine similarity; use matcher=CosineSimilarity() with extractor=DeepFeatures(model)"
            )
        kind: ScoreKind = "calibrated" if getattr(pipeline, "calibration", None) is not None else "cosine"
        return DeepPart(pipeline.extractor, getattr(pipeline, "transform", None), kind)
    raise InvalidInputError(
        f"pipeline of type {type(pipeline).__name__} is neither a SimilarityPipeline nor a WildFusion; "
        "pass the object that computed the similarity matrix"
    )
