"""Build one explained pair's artifact (document + files), render it and write it to the store.

The hook hands each pair the engine explained to :func:`store_pair`; everything between the engine's
result and the files on disk lives here, so the hook stays a runner and ``schema.py`` stays models.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import PairXError
from ..records import SHA256_PATTERN, ExplanationMetrics, ExplanationRef, MatchRecord
from .schema import (
    SCHEMA_VERSION,
    ArtifactMatch,
    ArtifactSettings,
    CuratorLines,
    ExplanationArtifact,
    ImageInfo,
    LibraryVersions,
    SharedFile,
)
from .store import ArtifactBlob, ArtifactStore, arrays_blob

if TYPE_CHECKING:
    from ..config import PairXConfig
    from ..engine.results import LayerExplanation, PairExplanation
    from ..evidence.lines import CuratorChoice
    from ..images import LoadedImage
    from .render import RenderedImage

_SHA256_RE = re.compile(SHA256_PATTERN)


@functools.lru_cache(maxsize=1)
def library_versions() -> LibraryVersions:
    """Versions of the libraries that shape an artifact (None for any not installed)."""
    from importlib import metadata

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    own = version("pairx-plugin")
    if own is None:  # running from a source checkout that was not pip-installed
        from ..versions import __version__ as own
    return LibraryVersions(
        pairx_plugin=own,
        torch=version("torch"),
        timm=version("timm"),
        zennit=version("zennit"),
        numpy=version("numpy"),
        pillow=version("pillow"),
    )


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def build_artifact(
    *,
    artifact_id: str,
    record: MatchRecord,
    pair: PairExplanation,
    layer: LayerExplanation,
    query: LoadedImage,
    candidate: LoadedImage,
    rendered: Mapping[str, RenderedImage],
    config: PairXConfig,
    config_digest: str,
    model_fingerprint: str,
    display_files: Mapping[str, SharedFile] | None = None,
    lines: CuratorChoice | None = None,
) -> tuple[ExplanationArtifact, list[ArtifactBlob]]:
    """The document (``files`` still empty) and the files to store for one pair at one layer.

    pair / layer: the engine's ``PairExplanation`` / ``LayerExplanation``; query / candidate:
    ``LoadedImage``; rendered: ``render_pair``'s output. The store fills ``files`` in as it writes.
    display_files: the shared display images (``{"query": ..., "candidate": ...}``, schema 1.2, what
    :func:`store_pair` passes); with them the display sizes are theirs (capped at ``display_max_side``)
    and ``pair_data.npz`` is added. Without them the document is the 1.0 layout (panels only).
    lines: the curator lines (:func:`pairx_plugin.evidence.lines.choose_curator_lines`, schema 1.3);
    None leaves ``curator_lines`` null (the lines are ``matches``).
    """
    from .compact import PAIR_DATA_NAME, PAIR_DATA_ROLE, pair_data_bytes

    sides = {}
    for side, image, input_size in (("query", query, pair.query_size), ("candidate", candidate, pair.candidate_size)):
        shared = None if display_files is None else display_files[side]
        if shared is not None:
            display_h, display_w = shared.height, shared.width
        else:
            display_h, display_w = int(image.display.shape[0]), int(image.display.shape[1])
        sides[side] = ImageInfo(
            input_height=int(input_size[0]),
            input_width=int(input_size[1]),
            display_height=display_h,
            display_width=display_w,
            content_sha256=image.content_sha256(),
            source_sha256=image.sha256 if image.sha256 and _SHA256_RE.fullmatch(image.sha256) else None,
            display_file=shared,
        )
    pixel_maps = layer.pixel_relevance_query
    colour_maps = int(np.asarray(pixel_maps).shape[0]) if np.ndim(pixel_maps) == 3 else 0
    matches = [
        _artifact_match(match, sides, index if index < colour_maps else None)
        for index, match in enumerate(layer.matches[: config.k_lines])
    ]
    curator_lines = None
    if lines is not None:
        coloured = {_cells_of(m): i for i, m in enumerate(layer.matches[:colour_maps])}
        curator_lines = CuratorLines(
            selection=lines.selection,
            matches=[_artifact_match(m, sides, coloured.get(_cells_of(m))) for m in lines.matches],
        )
    metrics = layer.metrics
    document = ExplanationArtifact(
        schema_version=SCHEMA_VERSION,
        artifact_id=artifact_id,
        query_id=record.query_id,
        candidate_id=record.candidate_id,
        score=record.score,
        rank=record.rank,
        cosine=float(pair.cosine),
        model_fingerprint=model_fingerprint,
        layer=layer.key,
        mode=str(pair.mode),
        backend=str(pair.backend),
        config_digest=config_digest,
        settings=ArtifactSettings(
            k_lines=config.k_lines,
            k_colors=config.k_colors,
            render=list(config.render),
            keep_arrays=config.keep_arrays,
            display_max_side=config.display_max_side if display_files is not None else None,
        ),
        query=sides["query"],
        candidate=sides["candidate"],
        matches=matches,
        curator_lines=curator_lines,
        metrics=ExplanationMetrics(
            irm=None if metrics.irm is None else float(metrics.irm),
            mc=float(metrics.mc),
            inlier_ratio=None if metrics.inlier_ratio is None else float(metrics.inlier_ratio),
            match_count=int(metrics.match_count),
        ),
        files=[],
        versions=library_versions(),
        created_at=utc_now(),
    )
    blobs = [
        ArtifactBlob(image.name, image.role, "image/png", image.png, int(image.width), int(image.height))
        for image in sorted(rendered.values(), key=lambda item: item.name)
    ]
    if display_files is not None:
        blobs.append(
            ArtifactBlob(
                PAIR_DATA_NAME,
                PAIR_DATA_ROLE,
                "application/x-npz",
                pair_data_bytes(layer, pair.query_size, pair.candidate_size),
            )
        )
    if config.keep_arrays:
        blobs.append(
            arrays_blob(
                {
                    "relevance_query": layer.relevance_query,
                    "relevance_candidate": layer.relevance_candidate,
                    "pixel_relevance_query": layer.pixel_relevance_query,
                    "pixel_relevance_candidate": layer.pixel_relevance_candidate,
                    "match_query_cells": _cells([m.query_cell for m in layer.matches]),
                    "match_candidate_cells": _cells([m.candidate_cell for m in layer.matches]),
                    "match_relevance": np.array([m.relevance for m in layer.matches], dtype=np.float64),
                    "match_distance": np.array([m.distance for m in layer.matches], dtype=np.float64),
                }
            )
        )
    return document, blobs


def _cells_of(match: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(int(v) for v in match.query_cell), tuple(int(v) for v in match.candidate_cell)


def _artifact_match(match: Any, sides: Mapping[str, ImageInfo], color_index: int | None) -> ArtifactMatch:
    return ArtifactMatch(
        query_cell=(int(match.query_cell[0]), int(match.query_cell[1])),
        candidate_cell=(int(match.candidate_cell[0]), int(match.candidate_cell[1])),
        query_xy=(float(match.query_xy[0]), float(match.query_xy[1])),
        candidate_xy=(float(match.candidate_xy[0]), float(match.candidate_xy[1])),
        query_display_xy=_to_display(match.query_xy, sides["query"]),
        candidate_display_xy=_to_display(match.candidate_xy, sides["candidate"]),
        relevance=float(match.relevance),
        distance=float(match.distance),
        color_index=color_index,
    )


def _cells(cells: list[tuple[int, int]]) -> np.ndarray:
    return np.array(cells, dtype=np.int32).reshape(-1, 2)


def _to_display(xy: Any, info: ImageInfo) -> tuple[float, float]:
    """Input-tensor pixel coordinates to display-image pixels (same crop, so a linear scale)."""
    return (
        float(xy[0]) * info.display_width / info.input_width,
        float(xy[1]) * info.display_height / info.input_height,
    )


@dataclass(frozen=True)
class PairFailure:
    """Rendering or storing one pair failed: the exception as raised and the stage (render / store)."""

    error: BaseException
    stage: str


@dataclass(frozen=True)
class PairContext:
    """What every pair of one run shares: settings, their digest and the model fingerprint."""

    config: PairXConfig
    config_digest: str
    model_fingerprint: str


def cached_refs(store: ArtifactStore, artifact_ids: Sequence[str]) -> list[ExplanationRef] | None:
    """References for ``artifact_ids`` when every one is complete in ``store`` (a cache hit), else None."""
    from ..errors import ArtifactError

    refs = []
    for identifier in artifact_ids:
        try:
            artifact = store.load(identifier)
        except ArtifactError:
            return None
        if store.problems(artifact):
            return None
        refs.append(store.ref(artifact, cache_hit=True))
    return refs


def store_pair(
    *,
    store: ArtifactStore,
    context: PairContext,
    record: MatchRecord,
    pair: PairExplanation,
    query: LoadedImage,
    candidate: LoadedImage,
    layer_keys: Sequence[str],
    artifact_ids: Sequence[str],
) -> list[ExplanationRef] | PairFailure:
    """Render, build and write the artifact of ``pair`` at every layer; the references, in layer order.

    An artifact that is already complete (an identical pair earlier in the run) is reused. A failure
    comes back as a :class:`PairFailure` (the exception untouched, so the record names its real type).
    """
    from ..evidence.attach import attach_evidence
    from ..evidence.lines import curator_lines_for
    from .compact import cap_display
    from .render import render_pair

    refs: list[ExplanationRef] = []
    displays: dict[str, Any] | None = None
    display_files: dict[str, SharedFile] = {}
    for layer_key, identifier in zip(layer_keys, artifact_ids, strict=True):
        layer = pair.layers.get(layer_key)
        if layer is None:
            error = PairXError(f"the engine's result has no layer {layer_key!r}; it has {sorted(pair.layers)}")
            return PairFailure(error, "relevance")
        existing = cached_refs(store, [identifier])
        if existing is not None:
            refs.extend(existing)
            continue
        config = context.config
        try:
            if displays is None:  # capped once per pair, shared by its layers
                displays = {
                    side: cap_display(image.display, config.display_max_side)
                    for side, image in (("query", query), ("candidate", candidate))
                }
            lines = curator_lines_for(layer, pair, query, candidate, k_lines=config.k_lines, setting=config.lines)
            rendered = {}
            if config.render:
                rendered = render_pair(
                    displays["query"],
                    displays["candidate"],
                    layer,
                    pair.query_size,
                    pair.candidate_size,
                    k_lines=config.k_lines,
                    panels=set(config.render),
                    lines=lines.matches,
                )
        except Exception as exc:  # noqa: BLE001 - costs only this record
            return PairFailure(exc, "render")
        try:
            if not display_files:
                for side, image in (("query", query), ("candidate", candidate)):
                    display_files[side] = store.put_shared_image(image.content_sha256(), displays[side])
            document, blobs = build_artifact(
                artifact_id=identifier,
                record=record,
                pair=pair,
                layer=layer,
                query=query,
                candidate=candidate,
                rendered=rendered,
                config=config,
                config_digest=context.config_digest,
                model_fingerprint=context.model_fingerprint,
                display_files=display_files,
                lines=lines,
            )
            document = attach_evidence(document, pair, layer_key, query, candidate)  # H6: docs/metrics.md
            document = store.write(document, blobs)
        except Exception as exc:  # noqa: BLE001 - costs only this record
            return PairFailure(exc, "store")
        refs.append(store.ref(document))
    return refs


__all__ = ["PairContext", "PairFailure", "build_artifact", "cached_refs", "library_versions", "store_pair", "utc_now"]
