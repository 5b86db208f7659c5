"""The demo's evidence figures: how well the evidence score separates right from wrong matches, what
re-ranking does to top-1, and where the lines that support the evidence land.

Used by :mod:`.demo` (on the easy set and on the scene set, ``pairx-plugin demo --scenes``); the
same numbers for any labelled run come from ``pairx-plugin evaluate RUN_DIR``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pairx_plugin.artifacts.schema import ExplanationArtifact
from pairx_plugin.evidence.evaluation import Evaluation, evaluate_records

from .correspondence import landed_lines


@dataclass(frozen=True)
class EvidenceSummary:
    evaluation: Evaluation | None  # None without both correct and incorrect labelled records
    supporting_lines: int  # lines of correct matches flagged supports_evidence
    supporting_landed: int  # of which land within one cell of the true correspondence

    @property
    def supporting_share(self) -> float | None:
        return self.supporting_landed / self.supporting_lines if self.supporting_lines else None


def summarise_evidence(records: list[Any], out_dir: Path, synthetic: Any) -> EvidenceSummary:
    """Evaluate ``records`` and score the supporting lines of correct matches against ``synthetic``'s geometry."""
    evaluation = None
    labels = [r.query_label == r.candidate_label for r in records if r.query_label is not None]
    if any(labels) and not all(labels):
        evaluation = evaluate_records(records)
    lines = landed = 0
    for record in records:
        if record.explanation is None or record.query_label != record.candidate_label:
            continue
        artifact = ExplanationArtifact.model_validate_json((out_dir / record.explanation.json_path).read_text("utf-8"))
        chosen = [m for m in artifact.matches if m.supports_evidence]
        if not chosen:
            continue
        size = (artifact.query.input_height, artifact.query.input_width)
        cell = max(m.candidate_xy[0] / (m.candidate_cell[0] + 0.5) for m in chosen[:1])
        hits, _ = landed_lines(
            np.array([m.query_xy for m in chosen]),
            np.array([m.candidate_xy for m in chosen]),
            synthetic.query_to_candidate(record.query_id, record.candidate_id, size),
            cell,
        )
        lines += len(hits)
        landed += int(hits.sum())
    return EvidenceSummary(evaluation, lines, landed)


def evidence_lines(summary: EvidenceSummary) -> list[str]:
    """The lines the demo prints about the evidence score."""
    out = []
    e = summary.evaluation
    if e is not None:
        host, evidence = e.metric("host_score"), e.metric("evidence")
        bins = " ".join("-" if b is None else f"{b:.3f}" for b in evidence.bins)
        out.append(
            f"evidence AUROC, correct vs incorrect: {_fmt(evidence.auroc)} (host cosine {_fmt(host.auroc)}; "
            f"within cosine bins: {bins})"
        )
        out.append(
            f"top-1 re-ranked by evidence: {_fmt(e.top1_host)} -> {_fmt(e.top1_reranked)} "
            f"(alpha={e.rerank.alpha}, shortlist_k={e.rerank.shortlist_k})"
        )
    share = summary.supporting_share
    out.append(
        f"lines supporting the evidence within one cell of the true correspondence, correct matches: "
        f"{_fmt(share)} ({summary.supporting_lines} lines)"
    )
    return out


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
