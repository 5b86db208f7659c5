"""pydantic models of the evidence package: the scores on a record, the re-ranking settings and outcome.

Kept free of numpy and of the rest of the package so ``records`` and ``config`` can import them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ForegroundSource = Literal["mask", "box", "centre_prior"]


class EvidenceScores(BaseModel):
    """Evidence that a match is the same animal, from where and how its relevant matches agree."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    score: float = Field(ge=0.0, le=1.0, description="on_animal × geometric × support (× layer_agreement).")
    on_animal: float = Field(
        ge=0.0, le=1.0, description="Relevance share of the matches whose both ends are on the animal."
    )
    geometric: float = Field(
        ge=0.0, le=1.0, description="Share of the on-animal relevance explained by one similarity transform."
    )
    support: float = Field(ge=0.0, le=1.0, description="1 - exp(-n/4), n = number of on-animal matches that agree.")
    distinctiveness: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Mean 1 - Lowe ratio of the on-animal matches (relevance-weighted); null when unknown.",
    )
    layer_agreement: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Share of the other layers' matches the first layer's transform explains; null with one layer.",
    )
    inliers: int = Field(ge=0, description="Matches that agree with the fitted transform.")
    scale: float | None = Field(
        None, description="Scale of the fitted transform (candidate / query), null without a fit."
    )
    foreground: ForegroundSource = Field(
        description="Where the animal was taken from: host mask, host box, or the centre prior."
    )


#: what re-ranking fuses with the host score
RerankScore = Literal["evidence", "calibrated", "irm", "mc", "inlier_ratio", "match_count"]


class RerankConfig(BaseModel):
    """``pairx.rerank``: opt-in re-ordering of each query's shortlist (the host's score and rank never change).

    fused = alpha × host_term + (1 − alpha) × evidence_term, where host_term = 1 − rank / (k − 1) over
    the shortlist of k records (scale-free, so any host score works) and evidence_term is the record's
    evidence score ("evidence"), its calibrated probability ("calibrated", needs ``calibration``), or
    for the published metrics (irm, mc, inlier_ratio, match_count) their within-shortlist rank term.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="Re-rank at all (off by default).")
    shortlist_k: int = Field(5, ge=2, description="Re-order the candidates with host rank < shortlist_k.")
    alpha: float = Field(0.3, ge=0.0, le=1.0, description="Weight of the host's rank; 1 keeps the host order.")
    score: RerankScore = Field("evidence", description="What is fused with the host's rank.")
    calibration: str | None = Field(
        None, description="Calibration file written by `pairx-plugin calibrate` (needed for score: calibrated)."
    )


class RerankInfo(BaseModel):
    """Where re-ranking put a record; the host's ``rank`` and ``score`` are kept beside it unchanged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    position: int = Field(ge=0, description="0-based position within the query after re-ranking.")
    fused_score: float | None = Field(description="The fused score; null for records outside the shortlist.")
    score: str = Field(description="The configured rerank score that was fused with the host's rank.")
    value: float | None = Field(None, description="The record's value of that score (null when it had none).")
