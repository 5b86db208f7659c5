"""The explanation artifact document (``explanation.json``) and the run manifest line, as pydantic models.

Curation UIs read these files without importing Python, so the JSON Schemas generated from these
models are checked in under ``docs/schema/`` (regenerate with
``python -m pairx_plugin.artifacts.export_schema``).

Versioning (semver on ``SCHEMA_VERSION``): a new optional field is a minor bump, a removed or renamed
field or a changed meaning is a major bump, a description fix is a patch.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..records import ExplanationMetrics, HostFloat, MatchRecord

SCHEMA_VERSION = "1.1.0"

_SHA256 = r"^[0-9a-f]{64}$"
#: file names inside an artifact directory: produced by us, never from host strings
_FILE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageInfo(_Strict):
    """One side of the pair: the tensor the model saw and the display image drawn on."""

    input_height: int = Field(ge=1, description="Height of the input tensor fed to the model (pixels).")
    input_width: int = Field(ge=1)
    display_height: int = Field(ge=1, description="Height of the display image (same crop as the input).")
    display_width: int = Field(ge=1)
    content_sha256: str = Field(
        pattern=_SHA256,
        description="Hash of what was explained (input tensor and display image, plus the source hash): "
        "the image part of the artifact id.",
    )
    source_sha256: str | None = Field(None, pattern=_SHA256, description="Hash of the source file bytes, when known.")


class ArtifactMatch(_Strict):
    """One of the top matches, best first. Cells are (x, y) feature-map indices."""

    query_cell: tuple[int, int]
    candidate_cell: tuple[int, int]
    query_xy: tuple[float, float] = Field(description="Cell centre in query input-tensor pixels (x, y).")
    candidate_xy: tuple[float, float]
    query_display_xy: tuple[float, float] = Field(description="Cell centre in query display-image pixels (x, y).")
    candidate_display_xy: tuple[float, float]
    relevance: float = Field(description="Layer relevance of the query cell times that of the candidate cell.")
    distance: float = Field(description="L2 distance of the two cells' feature vectors.")
    color_index: int | None = Field(
        None, description="Index of this match's pixel colour map (top k_colors matches), else null."
    )
    supports_evidence: bool | None = Field(
        None, description="True when the match is on the animal and agrees with the fitted transform, i.e. it "
        "counts towards metrics.evidence (docs/metrics.md); null when no evidence was computed."
    )


class ArtifactFile(_Strict):
    """A file of the artifact directory, with the hash that proves it complete."""

    name: str = Field(pattern=_FILE_NAME)
    role: str = Field(description='What the file shows, e.g. "composite", "heatmap_query", "arrays".')
    media_type: Literal["image/png", "application/x-npz"]
    sha256: str = Field(pattern=_SHA256)
    size_bytes: int = Field(ge=0)
    width: int | None = Field(None, ge=1)
    height: int | None = Field(None, ge=1)


class LibraryVersions(_Strict):
    pairx_plugin: str | None = None
    torch: str | None = None
    timm: str | None = None
    zennit: str | None = None
    numpy: str | None = None
    pillow: str | None = None


class ArtifactSettings(_Strict):
    """The settings that shaped this artifact (their hash is ``config_digest``)."""

    k_lines: int = Field(ge=1)
    k_colors: int = Field(ge=1)
    render: list[str]
    keep_arrays: bool


class ExplanationArtifact(_Strict):
    """``explanation.json``: one explained (query, candidate) pair at one layer.

    ``query_id``, ``candidate_id``, ``score`` and ``rank`` are those of the record that first produced
    the artifact; since the artifact id comes from content, another record with the same images and
    settings reuses it. A run's manifest is authoritative for its own records.
    """

    schema_version: str = Field(SCHEMA_VERSION, pattern=r"^\d+\.\d+\.\d+$")
    artifact_id: str = Field(pattern=_SHA256)
    query_id: str
    candidate_id: str
    score: HostFloat
    rank: int = Field(ge=0)
    cosine: float = Field(description="Cosine similarity of the two embeddings that was explained.")
    model_fingerprint: str = Field(pattern=_SHA256)
    layer: str
    mode: str
    backend: str
    config_digest: str = Field(pattern=_SHA256)
    settings: ArtifactSettings
    query: ImageInfo
    candidate: ImageInfo
    matches: list[ArtifactMatch]
    metrics: ExplanationMetrics
    files: list[ArtifactFile]
    versions: LibraryVersions
    created_at: datetime = Field(description="When written (UTC); not part of the content hash.")

    def content_sha256(self) -> str:
        """Hash of the document without ``created_at``: equal for equal content written at any time."""
        payload = self.model_dump(mode="json", exclude={"created_at"})
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def file(self, role: str) -> ArtifactFile | None:
        return next((f for f in self.files if f.role == role), None)


class ManifestEntry(_Strict):
    """One line of ``runs/<run_name>.jsonl``: one record of the run with its outcome."""

    schema_version: str = Field(SCHEMA_VERSION, pattern=r"^\d+\.\d+\.\d+$")
    run_name: str
    index: int = Field(ge=0, description="Position of the record in the list the host passed.")
    status: Literal["explained", "error", "not_explained"] = Field(
        description="explained: artifact attached (record.explanation); error: record.explanation_error; "
        "not_explained: outside top_k or explanations disabled."
    )
    record: MatchRecord


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
        from .. import __version__ as own
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
    pair: Any,
    layer: Any,
    query: Any,
    candidate: Any,
    rendered: Mapping[str, Any],
    config: Any,
    config_digest: str,
    model_fingerprint: str,
) -> tuple[ExplanationArtifact, list[Any]]:
    """The document (``files`` still empty) and the files to store for one pair at one layer.

    pair / layer: the engine's ``PairExplanation`` / ``LayerExplanation``; query / candidate:
    ``LoadedImage``; rendered: ``render_pair``'s output. The store fills ``files`` in as it writes.
    """
    from .store import ArtifactBlob, arrays_blob

    sides = {}
    for side, image, input_size in (("query", query, pair.query_size), ("candidate", candidate, pair.candidate_size)):
        display_h, display_w = int(image.display.shape[0]), int(image.display.shape[1])
        sides[side] = ImageInfo(
            input_height=int(input_size[0]),
            input_width=int(input_size[1]),
            display_height=display_h,
            display_width=display_w,
            content_sha256=image.content_sha256(),
            source_sha256=image.sha256 if image.sha256 and re.fullmatch(_SHA256[1:-1], image.sha256) else None,
        )
    colour_maps = int(np.asarray(layer.pixel_relevance_query).shape[0]) if np.ndim(layer.pixel_relevance_query) == 3 else 0
    matches = []
    for index, match in enumerate(layer.matches[: config.k_lines]):
        matches.append(
            ArtifactMatch(
                query_cell=tuple(int(v) for v in match.query_cell),
                candidate_cell=tuple(int(v) for v in match.candidate_cell),
                query_xy=tuple(float(v) for v in match.query_xy),
                candidate_xy=tuple(float(v) for v in match.candidate_xy),
                query_display_xy=_to_display(match.query_xy, sides["query"]),
                candidate_display_xy=_to_display(match.candidate_xy, sides["candidate"]),
                relevance=float(match.relevance),
                distance=float(match.distance),
                color_index=index if index < colour_maps else None,
            )
        )
    metrics = layer.metrics
    document = ExplanationArtifact(
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
            k_lines=config.k_lines, k_colors=config.k_colors, render=list(config.render), keep_arrays=config.keep_arrays
        ),
        query=sides["query"],
        candidate=sides["candidate"],
        matches=matches,
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
    if config.keep_arrays:
        blobs.append(
            arrays_blob(
                {
                    "relevance_query": layer.relevance_query,
                    "relevance_candidate": layer.relevance_candidate,
                    "pixel_relevance_query": layer.pixel_relevance_query,
                    "pixel_relevance_candidate": layer.pixel_relevance_candidate,
                    "match_query_cells": np.array([m.query_cell for m in layer.matches], dtype=np.int32).reshape(-1, 2),
                    "match_candidate_cells": np.array([m.candidate_cell for m in layer.matches], dtype=np.int32).reshape(-1, 2),
                    "match_relevance": np.array([m.relevance for m in layer.matches], dtype=np.float64),
                    "match_distance": np.array([m.distance for m in layer.matches], dtype=np.float64),
                }
            )
        )
    return document, blobs


def _to_display(xy: Any, info: ImageInfo) -> tuple[float, float]:
    """Input-tensor pixel coordinates to display-image pixels (same crop, so a linear scale)."""
    return (
        float(xy[0]) * info.display_width / info.input_width,
        float(xy[1]) * info.display_height / info.input_height,
    )


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name under ``docs/schema/`` -> JSON Schema, for every document a UI reads."""
    from ..config import PairXConfig

    return {
        "explanation_artifact.schema.json": _with_id(ExplanationArtifact.model_json_schema(mode="serialization"), "explanation_artifact"),
        "manifest_entry.schema.json": _with_id(ManifestEntry.model_json_schema(mode="serialization"), "manifest_entry"),
        "pairx_config.schema.json": _with_id(PairXConfig.model_json_schema(mode="validation"), "pairx_config"),
    }


def _with_id(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://pairx-plugin.invalid/schema/{name}/{SCHEMA_VERSION}",
        **schema,
    }


__all__ = [
    "SCHEMA_VERSION",
    "ExplanationArtifact",
    "ManifestEntry",
    "ArtifactFile",
    "ArtifactMatch",
    "ArtifactSettings",
    "ImageInfo",
    "LibraryVersions",
    "library_versions",
    "build_artifact",
    "json_schemas",
]
