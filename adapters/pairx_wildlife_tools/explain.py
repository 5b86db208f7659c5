"""Explain the top-k matches of a wildlife-tools similarity matrix (0.0.9 dict or 1.x array).

``pipeline=`` (a 1.x ``SimilarityPipeline`` or ``WildFusion``) explains its deep-feature part and marks
every record with how the host's score relates to the explained cosine (see :mod:`.fusion`).
"""

from __future__ import annotations

from typing import Any

from pairx_plugin.config import load_config
from pairx_plugin.errors import InvalidInputError
from pairx_plugin.records import MatchRecord

from .fusion import deep_part
from .images import DatasetImageSource, image_ids
from .topk import RankedCandidate, similarity_matrix, top_k
from .translate import records_from_candidates


def model_of(extractor: Any = None, model: Any = None) -> Any:
    """The embedding model: ``model`` when given, else the ``DeepFeatures`` extractor's ``model``."""
    if model is not None:
        return model
    if extractor is None:
        raise InvalidInputError(
            "no model to explain: pass the DeepFeatures extractor that computed the features (extractor=) "
            "or the embedding model itself (model=)"
        )
    found = getattr(extractor, "model", None)
    if found is None:
        raise InvalidInputError(
            f"extractor {type(extractor).__name__} has no 'model' attribute; PAIR-X explains deep "
            "embeddings, so pass a DeepFeatures extractor or model= explicitly"
        )
    return found


def explain_candidates(
    candidates: list[RankedCandidate],
    query_dataset: Any,
    database_dataset: Any,
    *,
    model: Any = None,
    config: Any = None,
    store: Any = None,
    progress: bool = True,
    run_name: str | None = None,
    pipeline: Any = None,
    explainer: Any = None,
) -> list[MatchRecord]:
    """Records for ``candidates`` (e.g. from :func:`from_topk_classifier`), explained by the hook.

    Candidates with ``rank >= config.top_k`` come back unexplained; with ``config.enabled`` off,
    every record comes back untouched. ``pipeline``: the SimilarityPipeline / WildFusion that scored
    them (its DeepFeatures model is explained unless ``model`` is given).
    """
    from pairx_plugin.hook import explain_matches

    config = load_config(config)
    extras: dict[str, str] = {}
    if pipeline is not None:
        part = deep_part(pipeline)
        model = model if model is not None else part.model
        query_dataset, database_dataset = part.datasets(query_dataset, database_dataset)
        extras = part.extras()
    if model is None:
        model = model_of(None, None)  # raises, saying what to pass
    records = records_from_candidates(candidates, query_dataset, database_dataset)
    if extras:
        records = [record.model_copy(update={"extras": {**record.extras, **extras}}) for record in records]
    source = DatasetImageSource([query_dataset, database_dataset])
    explain = explain_matches if explainer is None else explainer  # e.g. pairx_ray.RayExplainer
    return explain(
        records=records, images=source, model=model, config=config, store=store, progress=progress, run_name=run_name
    )


def explain_similarity(
    similarity: Any,
    query_dataset: Any,
    database_dataset: Any,
    extractor: Any = None,
    config: Any = None,
    *,
    model: Any = None,
    store: Any = None,
    key: str | None = None,
    progress: bool = True,
    run_name: str | None = None,
    pipeline: Any = None,
    explainer: Any = None,
) -> list[MatchRecord]:
    """Explained ``MatchRecord``s for the ``config.top_k`` best candidates of every query.

    similarity: ``CosineSimilarity``'s output, ``{"cosine": matrix}`` (0.0.9) or the matrix (1.x);
        ``key`` picks a matrix from a dict with several.
    query_dataset / database_dataset: the datasets the features came from; images are loaded through
        them (crop and transform included), so the explained tensor is the one that was scored.
    extractor: the ``DeepFeatures`` that computed the features (its ``model`` is explained), or pass
        ``model=``. config: a ``PairXConfig``, a dict, or a YAML/JSON path or text with a ``pairx:``
        section. A database row whose ``image_id`` equals the query's is skipped (no split: every
        image queries the others).
    pipeline: instead of ``extractor``, the 1.x ``SimilarityPipeline`` / ``WildFusion`` that produced
        ``similarity`` (its DeepFeatures part is explained; records say when the score was fused).
    """
    config = load_config(config)
    matrix = similarity_matrix(similarity, key)
    query_ids, database_ids = image_ids(query_dataset), image_ids(database_dataset)
    candidates = top_k(matrix, config.top_k, query_ids=query_ids, database_ids=database_ids)
    if pipeline is None:
        model = model_of(extractor, model)
    return explain_candidates(
        candidates,
        query_dataset,
        database_dataset,
        model=model,
        config=config,
        store=store,
        progress=progress,
        run_name=run_name,
        pipeline=pipeline,
        explainer=explainer,
    )
