"""How well a run's numbers separate correct from incorrect matches, and what re-ranking does.

Works on the records of any run (a manifest's records carry ``query_label`` / ``candidate_label``):
a record is *correct* when both labels are present and equal. Records without both labels are left
out of every figure (and counted).

* AUROC of a number = P(value of a random correct record > value of a random incorrect one), ties
  counting one half (Mann–Whitney U / (n₊ n₋)); a missing value (IRM under 4 matches, a record
  without an explanation) ranks below every present value.
* Within host-score bins: records split into ``bins`` quantile bins of the host score; a bin's AUROC
  is reported when it holds both classes. A number that only re-states the host score drops to ~0.5
  inside the bins; real extra evidence stays high.
* top-1: share of labelled queries whose first candidate is correct, in the host's order and after
  re-ranking with :func:`.rerank.rerank_records`.
* reliability: for a score in [0, 1] (the evidence score or a calibrated probability), the observed
  share of correct records per equal-width score bin.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .calibration import Calibration
from .models import RerankConfig
from .rerank import rerank_records

#: the numbers evaluated besides the host score, in report order
METRIC_NAMES: tuple[str, ...] = (
    "evidence",
    "on_animal",
    "geometric",
    "support",
    "distinctiveness",
    "layer_agreement",
    "irm",
    "mc",
    "inlier_ratio",
    "match_count",
)


def auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for boolean ``labels`` (ties count one half).

    NaN scores rank below every other value. Raises :class:`InvalidInputError` without both classes.
    """
    values = np.asarray(scores, float).reshape(-1)
    truth = np.asarray(labels, bool).reshape(-1)
    if values.shape != truth.shape:
        raise InvalidInputError(f"scores ({values.shape[0]}) and labels ({truth.shape[0]}) differ in length")
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if positives == 0 or negatives == 0:
        raise InvalidInputError(f"AUROC needs both classes; got {positives} correct and {negatives} incorrect")
    finite = np.where(np.isnan(values), -np.inf, values)
    ranks = _average_ranks(finite)
    u = ranks[truth].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values))
    start = 0
    while start < len(values):
        stop = start
        while stop + 1 < len(values) and sorted_values[stop + 1] == sorted_values[start]:
            stop += 1
        ranks[order[start : stop + 1]] = (start + stop) / 2.0 + 1.0
        start = stop + 1
    return ranks


def roc_curve_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold (for plotting), from (0,0) to (1,1)."""
    values = np.where(np.isnan(scores), -np.inf, np.asarray(scores, float))
    truth = np.asarray(labels, bool)
    order = np.argsort(-values, kind="mergesort")
    values, truth = values[order], truth[order]
    distinct = np.r_[np.nonzero(np.diff(values))[0], len(values) - 1]
    tps = np.cumsum(truth)[distinct]
    fps = (distinct + 1) - tps
    return np.r_[0.0, fps / max(1, (~truth).sum())], np.r_[0.0, tps / max(1, truth.sum())]


@dataclass
class LabelledRecord:
    """What evaluation needs of one record."""

    query_id: str
    rank: int
    host_score: float
    correct: bool
    values: dict[str, float | None]


def metric_values(record: Any) -> dict[str, float | None]:
    """The record's number for every name of :data:`METRIC_NAMES` (None when it has none)."""
    ref = getattr(record, "explanation", None)
    values: dict[str, float | None] = dict.fromkeys(METRIC_NAMES)
    if ref is None:
        return values
    metrics = ref.metrics
    for name in ("irm", "mc", "inlier_ratio", "match_count"):
        value = getattr(metrics, name)
        values[name] = None if value is None else float(value)
    evidence = getattr(metrics, "evidence", None)
    if evidence is not None:
        values["evidence"] = evidence.score
        for name in ("on_animal", "geometric", "support", "distinctiveness", "layer_agreement"):
            values[name] = getattr(evidence, name)
    return values


def labelled(records: Sequence[Any]) -> tuple[list[LabelledRecord], int]:
    """Records with both labels as :class:`LabelledRecord`, and how many were left out."""
    out = []
    for record in records:
        if record.query_label is None or record.candidate_label is None:
            continue
        out.append(
            LabelledRecord(
                record.query_id,
                record.rank,
                float(record.score),
                record.query_label == record.candidate_label,
                metric_values(record),
            )
        )
    return out, len(records) - len(out)


@dataclass
class MetricReport:
    name: str
    auroc: float | None  # None when the number is missing on every record
    bins: list[float | None]  # per host-score bin; None where a bin lacks a class
    present: int  # records that have the number


@dataclass
class Evaluation:
    records: int
    unlabelled: int
    correct: int
    bin_edges: list[float]
    bin_sizes: list[tuple[int, int]]  # (correct, incorrect) per bin
    metrics: list[MetricReport]
    queries: int
    top1_host: float | None
    top1_reranked: float | None
    rerank: RerankConfig
    reliability: list[tuple[float, float, float, int]] = field(default_factory=list)  # (lo, hi, observed, n)

    def metric(self, name: str) -> MetricReport:
        return next(m for m in self.metrics if m.name == name)


def _bins(host: np.ndarray, count: int) -> tuple[np.ndarray, list[float]]:
    if count < 1:
        raise InvalidInputError(f"bins={count}: give at least 1 host-score bin")
    edges = np.unique(np.quantile(host, np.linspace(0, 1, count + 1)))
    if len(edges) < 2:
        return np.zeros(len(host), int), [float(host.min()), float(host.max())]
    index = np.clip(np.searchsorted(edges, host, side="right") - 1, 0, len(edges) - 2)
    return index, edges.tolist()


def _safe_auroc(values: np.ndarray, truth: np.ndarray) -> float | None:
    if truth.all() or not truth.any() or np.isnan(values).all():
        return None
    return auroc(values, truth)


def top1(records: Sequence[Any], position: str = "rank") -> tuple[float | None, int]:
    """Share of labelled queries whose first record (by host ``rank`` or re-ranked position) is correct."""
    best: OrderedDict[str, tuple[int, Any]] = OrderedDict()
    for record in records:
        if record.query_label is None or record.candidate_label is None:
            continue
        key = record.rank if position == "rank" else (record.rerank.position if record.rerank else record.rank)
        if record.query_id not in best or key < best[record.query_id][0]:
            best[record.query_id] = (key, record)
    if not best:
        return None, 0
    hits = [r.query_label == r.candidate_label for _, r in best.values()]
    return float(np.mean(hits)), len(hits)


def reliability(scores: np.ndarray, truth: np.ndarray, bins: int = 10) -> list[tuple[float, float, float, int]]:
    """(low, high, observed share correct, count) per equal-width bin of [0, 1] that has records."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    out = []
    clipped = np.clip(scores, 0.0, 1.0)
    index = np.clip(np.searchsorted(edges, clipped, side="right") - 1, 0, bins - 1)
    for b in range(bins):
        inside = (index == b) & ~np.isnan(scores)
        if inside.any():
            out.append((float(edges[b]), float(edges[b + 1]), float(truth[inside].mean()), int(inside.sum())))
    return out


def evaluate_records(
    records: Sequence[Any], *, bins: int = 4, rerank: RerankConfig | None = None, calibration: Calibration | None = None
) -> Evaluation:
    """AUROCs (overall and within host-score bins), top-1 before/after re-ranking, reliability."""
    rows, unlabelled = labelled(records)
    if not rows:
        raise InvalidInputError(
            "no record carries both query_label and candidate_label; evaluation needs labelled records "
            "(a run of a labelled dataset)"
        )
    truth = np.array([r.correct for r in rows])
    host = np.array([r.host_score for r in rows])
    finite_host = np.where(np.isfinite(host), host, np.nan)
    filled = np.where(
        np.isnan(finite_host), np.nanmin(finite_host) if np.isfinite(finite_host).any() else 0.0, finite_host
    )
    bin_index, edges = _bins(filled, bins)
    n_bins = len(edges) - 1
    reports = []
    for name in ("host_score", *METRIC_NAMES):
        values = (
            host
            if name == "host_score"
            else np.array([math.nan if r.values[name] is None else r.values[name] for r in rows], float)
        )
        present = int((~np.isnan(values)).sum())
        overall = _safe_auroc(values, truth) if present else None
        per_bin = [
            _safe_auroc(values[bin_index == b], truth[bin_index == b]) if present else None for b in range(n_bins)
        ]
        reports.append(MetricReport(name, overall, per_bin, present))
    config = rerank or RerankConfig()
    reranked = rerank_records(list(records), config, calibration=calibration, force=True)
    top_host, queries = top1(records, "rank")
    top_reranked, _ = top1(reranked, "rerank")
    evidence = np.array([math.nan if r.values["evidence"] is None else r.values["evidence"] for r in rows], float)
    if calibration is not None:
        evidence = np.where(np.isnan(evidence), np.nan, calibration.predict(np.nan_to_num(evidence)))
    return Evaluation(
        records=len(rows),
        unlabelled=unlabelled,
        correct=int(truth.sum()),
        bin_edges=edges,
        bin_sizes=[(int(truth[bin_index == b].sum()), int((~truth[bin_index == b]).sum())) for b in range(n_bins)],
        metrics=reports,
        queries=queries,
        top1_host=top_host,
        top1_reranked=top_reranked,
        rerank=config,
        reliability=reliability(evidence, truth),
    )


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def report_lines(evaluation: Evaluation) -> list[str]:
    """The text ``pairx-plugin evaluate`` prints."""
    e = evaluation
    lines = [
        (
            f"records: {e.records} labelled ({e.correct} correct, {e.records - e.correct} incorrect); "
            f"{e.unlabelled} without labels left out"
        ),
        "AUROC, correct vs incorrect (overall, then within host-score bins; '-' = bin lacks a class or no values)",
        "bins: "
        + "  ".join(
            f"[{lo:.3g}, {hi:.3g}] {c}+/{i}-"
            for (lo, hi), (c, i) in zip(zip(e.bin_edges[:-1], e.bin_edges[1:]), e.bin_sizes)
        ),
    ]
    width = max(len(m.name) for m in e.metrics)
    for metric in e.metrics:
        if metric.present == 0:
            lines.append(f"  {metric.name.ljust(width)}  (no values)")
            continue
        lines.append(f"  {metric.name.ljust(width)}  {_fmt(metric.auroc)}   " + " ".join(_fmt(b) for b in metric.bins))
    r = e.rerank
    lines.append(
        f"top-1 over {e.queries} queries: host {_fmt(e.top1_host)} -> re-ranked {_fmt(e.top1_reranked)} "
        f"(score={r.score}, alpha={r.alpha}, shortlist_k={r.shortlist_k})"
    )
    return lines
