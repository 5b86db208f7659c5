"""Pydantic records passed from a benchmark worker process to the table and the ``--json`` file."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Megabytes = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class ConfigResult(BaseModel):
    """Measurements of one configuration, from its own process. ``error`` set: the numbers are missing."""

    model_config = ConfigDict(extra="forbid")

    name: str
    model: str
    weights: str
    size: int
    layer: str
    device: str
    mode: str
    threads: int
    repeats: int
    query_repeats: int
    warmup: int
    k_lines: int
    k_colors: int
    max_batch_images: int | None = None
    setup_s: Seconds | None = None
    pair_s: list[Seconds] = Field(default_factory=list, description="wall seconds of each timed explain_pair")
    query_s: list[Seconds] = Field(default_factory=list, description="wall seconds of each timed top-5 explain_query")
    pair_cpu_s: list[Seconds] = Field(default_factory=list,
                                      description="CPU seconds of this process for each timed explain_pair")
    query_cpu_s: list[Seconds] = Field(default_factory=list, description="CPU seconds of each timed top-5 query")
    pair_median_s: Seconds | None = None
    query_median_s: Seconds | None = None
    pair_cpu_median_s: Seconds | None = None
    query_cpu_median_s: Seconds | None = None
    pair_stages_s: dict[str, float] = Field(default_factory=dict, description="median engine seconds per stage, one pair")
    query_stages_s: dict[str, float] = Field(default_factory=dict,
                                             description="median engine seconds per stage, top-5 query (first chunk)")
    pair_match_count: int | None = None
    pair_cosine: float | None = None
    rss_scope: str = "phase"
    peak_rss_setup_mb: Megabytes | None = None
    peak_rss_pair_mb: Megabytes | None = None
    peak_rss_query_mb: Megabytes | None = None
    peak_gpu_pair_mb: Megabytes | None = None
    peak_gpu_query_mb: Megabytes | None = None
    error: str | None = None


class BenchReport(BaseModel):
    """The whole run: where and how it was measured, and one result per configuration."""

    model_config = ConfigDict(extra="forbid")

    date_utc: str
    host: str
    cpu: str
    cpu_count: int
    torch_version: str
    engine_revision: str = Field(description="git commit of the measured code, '+dirty' with local changes")
    device: str
    device_name: str
    threads: str
    repeats: int
    mode: str
    load_average_start: list[float]
    load_average_end: list[float]
    results: list[ConfigResult]
