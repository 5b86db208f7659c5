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
    pair_cpu_s: list[Seconds] = Field(
        default_factory=list, description="CPU seconds of this process for each timed explain_pair"
    )
    query_cpu_s: list[Seconds] = Field(default_factory=list, description="CPU seconds of each timed top-5 query")
    pair_median_s: Seconds | None = None
    query_median_s: Seconds | None = None
    pair_cpu_median_s: Seconds | None = None
    query_cpu_median_s: Seconds | None = None
    pair_stages_s: dict[str, float] = Field(
        default_factory=dict, description="median engine seconds per stage, one pair"
    )
    query_stages_s: dict[str, float] = Field(
        default_factory=dict, description="median engine seconds per stage, top-5 query (first chunk)"
    )
    pair_match_count: int | None = None
    pair_cosine: float | None = None
    rss_scope: str = "phase"
    peak_rss_setup_mb: Megabytes | None = None
    peak_rss_pair_mb: Megabytes | None = None
    peak_rss_query_mb: Megabytes | None = None
    peak_gpu_pair_mb: Megabytes | None = None
    peak_gpu_query_mb: Megabytes | None = None
    floor_cpu_s: list[Seconds] = Field(
        default_factory=list, description="CPU seconds of one plain forward+backward of both images of the pair"
    )
    floor_cpu_median_s: Seconds | None = None
    pair_floor_multiple: float | None = Field(None, description="pair CPU median / floor CPU median")
    five_pairs_cpu_s: list[Seconds] = Field(
        default_factory=list, description="CPU seconds of five explain_pair calls (the top-5 set)"
    )
    five_pairs_cpu_median_s: Seconds | None = None
    query_vs_pairs: float | None = Field(None, description="top-5 query CPU median / five pairs CPU median")
    e2e_cpu_s: list[Seconds] = Field(
        default_factory=list, description="CPU seconds of explain_matches on 5 records (default artifacts)"
    )
    e2e_records_per_s: float | None = None
    e2e_shares: dict[str, float] = Field(
        default_factory=dict, description="share of one explain_matches call per part (cProfile)"
    )
    engine_pairs_per_s: float | None = Field(None, description="1 / pair CPU median")
    e2e_vs_engine: float | None = Field(None, description="records/s end to end / engine pairs/s")
    reference_pair_cpu_s: list[Seconds] = Field(
        default_factory=list, description="CPU seconds of the published pairx() on the pair"
    )
    reference_pair_cpu_median_s: Seconds | None = None
    reference_speedup: float | None = Field(None, description="published pair CPU / engine pair CPU")
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
