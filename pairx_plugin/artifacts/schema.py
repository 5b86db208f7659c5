"""The explanation artifact document (``explanation.json``) and the run manifest line, as pydantic models.

Curation UIs read these files without importing Python, so the JSON Schemas generated from these
models are checked in under ``docs/schema/`` (regenerate with
``python -m pairx_plugin.artifacts.export_schema``).

Versioning (semver on ``SCHEMA_VERSION``): a new optional field is a minor bump, a removed or renamed
field or a changed meaning is a major bump. The version is part of every artifact id, so a
description-only fix (the IRM / inlier-ratio wording, corrected to what was always computed: input
pixels, all mutual matches) keeps the version and with it every stored artifact's id.

This module holds the models, the version and the JSON Schema export only; building an artifact
from engine results is :mod:`pairx_plugin.artifacts.build`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..records import SHA256_PATTERN, ExplanationMetrics, HostFloat, MatchRecord

SCHEMA_VERSION = "1.3.0"

_SHA256 = SHA256_PATTERN
#: file names inside an artifact directory and run names: produced by us or checked, never paths
FILE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_FILE_NAME = FILE_NAME_PATTERN
MediaType = Literal["image/png", "application/x-npz"]
#: how the curator lines were chosen: on the animal (host foreground) or the published top lines
LineSelection = Literal["foreground", "relevance"]
ManifestStatus = Literal["explained", "error", "not_explained"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: a shared per-image file, relative to the store root: ``images/<sha[:2]>/<sha>.png`` (sha of its bytes)
SHARED_PATH_PATTERN = r"^images/[0-9a-f]{2}/[0-9a-f]{64}\.png$"


class SharedFile(_Strict):
    """A file stored once per content under ``images/`` and shared by every artifact that uses it (1.2)."""

    path: str = Field(pattern=SHARED_PATH_PATTERN, description="Relative to the store root; named by its sha256.")
    media_type: MediaType = "image/png"
    sha256: str = Field(pattern=_SHA256)
    size_bytes: int = Field(ge=0)
    width: int = Field(ge=1)
    height: int = Field(ge=1)


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
    display_file: SharedFile | None = Field(
        None,
        description="(1.2) The display image (display_width x display_height) as a shared PNG under images/; "
        "null in 1.0 documents, which carry display_* PNGs of their own when rendered.",
    )


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
        None,
        description="True when the match is on the animal and agrees with the fitted transform, i.e. it "
        "counts towards metrics.evidence (docs/metrics.md); null when no evidence was computed.",
    )


class CuratorLines(_Strict):
    """(1.3) The lines drawn for a curator, and how they were chosen (docs/metrics.md, "Curator lines").

    ``foreground``: the most relevant mutual matches with both ends on the animal (the host's mask or
    box for both images), at most ``k_lines``; ``relevance``: the published top lines, i.e. the same
    matches as ``ExplanationArtifact.matches`` (no foreground for both images, or ``pairx.lines:
    relevance``). ``matches`` stays the published list either way (IRM, MC and the evidence score use it).
    """

    selection: LineSelection = Field(
        description="foreground: the most relevant matches on the animal; relevance: the published top lines."
    )
    matches: list[ArtifactMatch] = Field(
        description="The lines, most relevant first; color_index points to the pixel colour map of the same "
        "match when it has one."
    )


class ArtifactFile(_Strict):
    """A file of the artifact directory, with the hash that proves it complete."""

    name: str = Field(pattern=_FILE_NAME)
    role: str = Field(description='What the file shows, e.g. "composite", "heatmap_query", "arrays".')
    media_type: MediaType
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
    display_max_side: int | None = Field(
        None, ge=1, description="(1.2) Longest side the display image was capped to; null in 1.0 documents."
    )


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
    curator_lines: CuratorLines | None = Field(
        None,
        description="(1.3) The lines to draw for a curator (chosen on the animal when the host gave its "
        "foreground); null in older documents, where the lines are `matches`.",
    )
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

    def drawn_matches(self) -> list[ArtifactMatch]:
        """The lines a curator sees: ``curator_lines`` when the document has them (1.3), else ``matches``."""
        return self.matches if self.curator_lines is None else self.curator_lines.matches


class ManifestEntry(_Strict):
    """One line of ``runs/<run_name>.jsonl``: one record of the run with its outcome."""

    schema_version: str = Field(SCHEMA_VERSION, pattern=r"^\d+\.\d+\.\d+$")
    run_name: str
    index: int = Field(ge=0, description="Position of the record in the list the host passed.")
    status: ManifestStatus = Field(
        description="explained: artifact attached (record.explanation); error: record.explanation_error; "
        "not_explained: outside top_k or explanations disabled."
    )
    record: MatchRecord


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name under ``docs/schema/`` -> JSON Schema, for every document a UI reads."""
    from ..config import PairXConfig

    return {
        "explanation_artifact.schema.json": _with_id(
            ExplanationArtifact.model_json_schema(mode="serialization"), "explanation_artifact"
        ),
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
    "FILE_NAME_PATTERN",
    "SCHEMA_VERSION",
    "SHARED_PATH_PATTERN",
    "ArtifactFile",
    "ArtifactMatch",
    "ArtifactSettings",
    "CuratorLines",
    "ExplanationArtifact",
    "ImageInfo",
    "LibraryVersions",
    "LineSelection",
    "ManifestEntry",
    "SharedFile",
    "json_schemas",
]
