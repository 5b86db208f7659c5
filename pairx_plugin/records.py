"""Match records: what a host hands the hook, and what it gets back.

A ``MatchRecord`` is one (query, candidate) match as the host computed it. The hook returns a copy of
every record carrying either an :class:`ExplanationRef` (where the artifact is, with its metrics) or an
:class:`ExplanationErrorInfo` (why this one match could not be explained). The host's score and rank
are never changed, NaN and infinities included (WBIA scores unscored candidates as ``-inf``).

Ids are arbitrary host strings and are never used as file names; the artifact store names files from
content hashes.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    SerializationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .errors import InvalidInputError
from .evidence.models import EvidenceScores, RerankInfo

#: where explaining a record failed
Stage = Literal["load", "forward", "relevance", "match", "pixels", "render", "store"]
STAGES: tuple[str, ...] = ("load", "forward", "relevance", "match", "pixels", "render", "store")

#: a sha256 digest as lowercase hex (artifact ids, content hashes, fingerprints): the one pattern
SHA256_PATTERN = r"^[0-9a-f]{64}$"

_NON_FINITE_TEXT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _parse_score(value: Any) -> Any:
    if isinstance(value, str) and value in _NON_FINITE_TEXT:
        return _NON_FINITE_TEXT[value]
    if isinstance(value, bool):
        raise ValueError("a score must be a number, not a boolean")
    return value


def _dump_score(value: float, info: SerializationInfo) -> float | str:
    # strict JSON has no NaN/Infinity literals; write them as strings so any JSON reader copes
    if info.mode_is_json() and not math.isfinite(value):
        if math.isnan(value):
            return "NaN"
        return "Infinity" if value > 0 else "-Infinity"
    return value


#: a float that keeps NaN / +-inf through JSON (as the strings "NaN", "Infinity", "-Infinity")
HostFloat = Annotated[
    float,
    BeforeValidator(_parse_score),
    PlainSerializer(_dump_score, when_used="always"),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]}),
]


def _coerce_id(value: Any) -> Any:
    """Hosts use ints, UUIDs and paths as ids; store them all as strings."""
    if isinstance(value, bool):
        raise ValueError("an id must be a string, an integer, a UUID or a path, not a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


HostId = Annotated[str, BeforeValidator(_coerce_id), Field(min_length=1)]
HostLabel = Annotated[str | None, BeforeValidator(_coerce_id)]


class ExplanationMetrics(BaseModel):
    """Plausibility metrics of an explained match (see ``engine.results.PairMetrics``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    irm: float | None = Field(
        description="1 / (1 + mean reprojection residual, in input pixels, of all mutual matches under a RANSAC "
        "homography fitted to their cell centres); null under 4 matches or when no homography is found."
    )
    mc: float = Field(description="Mean relevance of the top k_lines matches (0 when there are none).")
    inlier_ratio: float | None = Field(
        description="Share of all mutual matches that are RANSAC inliers; null under 4 matches."
    )
    match_count: int = Field(ge=0, description="Mutual nearest-neighbour matches before truncation to k_lines.")
    evidence: EvidenceScores | None = Field(None, description="Evidence score and its components (docs/metrics.md).")


class ExplanationRef(BaseModel):
    """Where one explained match's artifact lives (paths relative to the store root, '/'-separated)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    artifact_id: str = Field(pattern=SHA256_PATTERN)
    layer: str
    json_path: str = Field(description="The artifact's explanation.json, relative to the store root.")
    images: dict[str, str] = Field(default_factory=dict, description="Image role -> path relative to the store root.")
    metrics: ExplanationMetrics
    cosine: float = Field(description="Cosine similarity of the two embeddings, as explained.")
    cache_hit: bool = Field(False, description="True when the artifact already existed and no work was done.")


class ExplanationErrorInfo(BaseModel):
    """Why one match could not be explained. The record's score and rank are unaffected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(description="Exception class name, e.g. 'InvalidInputError'.")
    message: str
    stage: Stage = Field(
        description="load: the record's images (missing, unreadable, or a duplicate record); forward / "
        "relevance / match / pixels: engine stages; render: drawing; store: writing the artifact."
    )

    @classmethod
    def from_exception(cls, exc: BaseException, stage: str) -> ExplanationErrorInfo:
        message = str(exc) or repr(exc)
        return cls.model_validate({"type": type(exc).__name__, "message": message, "stage": stage})


class MatchRecord(BaseModel):
    """One match from the host's pipeline; after the hook, with an explanation or an error.

    ``explanation`` refers to the first explained layer's artifact; with several ``layer_keys`` the
    other layers' artifacts are in ``other_layers``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    query_id: HostId
    candidate_id: HostId
    rank: int = Field(ge=0, description="0-based rank of the candidate for this query, as the host ranked it.")
    score: HostFloat = Field(description="The host's score, unchanged (NaN/Infinity written as strings in JSON).")
    query_label: HostLabel = None
    candidate_label: HostLabel = None
    extras: dict[str, JsonValue] = Field(default_factory=dict, description="Host data carried along, JSON-able.")
    explanation: ExplanationRef | None = None
    other_layers: list[ExplanationRef] = Field(default_factory=list)
    explanation_error: ExplanationErrorInfo | None = None
    rerank: RerankInfo | None = Field(
        None, description="Position after opt-in re-ranking (pairx.rerank); rank is unchanged."
    )

    @field_validator("rank", mode="before")
    @classmethod
    def _rank_not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("rank must be an integer, not a boolean")
        return value

    @model_validator(mode="after")
    def _one_outcome(self) -> MatchRecord:
        if self.explanation is not None and self.explanation_error is not None:
            raise ValueError("a record carries either an explanation or an explanation_error, not both")
        if self.other_layers and self.explanation is None:
            raise ValueError("other_layers needs an explanation for the first layer")
        return self

    @property
    def pair(self) -> tuple[str, str]:
        """``(query_id, candidate_id)``: a record's identity within one run."""
        return (self.query_id, self.candidate_id)

    def with_explanation(self, refs: list[ExplanationRef]) -> MatchRecord:
        """A copy carrying the artifacts of ``refs`` (first layer first), with no error."""
        return self.model_copy(
            update={"explanation": refs[0], "other_layers": list(refs[1:]), "explanation_error": None}
        )

    def with_error(self, error: ExplanationErrorInfo) -> MatchRecord:
        """A copy carrying ``error`` and no explanation; score and rank unchanged."""
        return self.model_copy(update={"explanation": None, "other_layers": [], "explanation_error": error})


def coerce_records(records: Any) -> list[MatchRecord]:
    """``records`` as a list of ``MatchRecord``; :class:`InvalidInputError` naming the first bad one."""
    if isinstance(records, (str, bytes, Mapping, MatchRecord)) or not hasattr(records, "__iter__"):
        raise InvalidInputError(f"records must be a sequence of MatchRecord, got {type(records).__name__}")
    result = []
    for index, record in enumerate(records):
        if isinstance(record, MatchRecord):
            result.append(record)
            continue
        if not isinstance(record, Mapping):
            raise InvalidInputError(
                f"records[{index}] must be a MatchRecord or a mapping of its fields, got {type(record).__name__}"
            )
        try:
            result.append(MatchRecord.model_validate(record))
        except ValueError as exc:
            errors = getattr(exc, "errors", None)
            problems = (
                "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<record>'}: {err['msg']}" for err in errors())
                if callable(errors)
                else str(exc)
            )
            raise InvalidInputError(f"records[{index}] is not a valid MatchRecord: {problems}") from None
    return result


__all__ = [
    "coerce_records",
    "MatchRecord",
    "ExplanationRef",
    "ExplanationErrorInfo",
    "ExplanationMetrics",
    "HostFloat",
    "Stage",
    "STAGES",
]
