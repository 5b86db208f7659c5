"""AUROC, binned AUROC, top-1 and reliability, checked against scikit-learn and hand-made runs."""

from __future__ import annotations

import numpy as np
import pytest

from pairx_plugin.errors import InvalidInputError
from pairx_plugin.evidence.evaluation import (
    auroc,
    evaluate_records,
    reliability,
    report_lines,
    roc_curve_points,
    top1,
)
from pairx_plugin.evidence.models import EvidenceScores, RerankConfig
from pairx_plugin.records import ExplanationMetrics, ExplanationRef, MatchRecord


def record(
    query: str,
    candidate: str,
    rank: int,
    score: float,
    same: bool | None,
    evidence: float | None,
    irm: float | None = 0.5,
) -> MatchRecord:
    metrics = ExplanationMetrics(
        irm=irm,
        mc=0.1,
        inlier_ratio=0.5,
        match_count=10,
        evidence=None
        if evidence is None
        else EvidenceScores(
            score=evidence,
            on_animal=evidence,
            geometric=1.0,
            support=1.0,
            distinctiveness=0.2,
            inliers=5,
            scale=1.0,
            foreground="mask",
        ),
    )
    ref = ExplanationRef(
        artifact_id="0" * 64, layer="blocks.3", json_path="a/explanation.json", metrics=metrics, cosine=score
    )
    label = None if same is None else ("x" if same else "y")
    return MatchRecord(
        query_id=query,
        candidate_id=candidate,
        rank=rank,
        score=score,
        query_label=None if same is None else "x",
        candidate_label=label,
        explanation=ref,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_scikit_learn_with_ties(seed):
    metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is not installed")
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.normal(size=300) + labels * 0.7, 1)  # rounding makes many ties
    assert auroc(scores, labels) == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)
    fpr, tpr = roc_curve_points(scores, labels)
    sk_fpr, sk_tpr, _ = metrics.roc_curve(labels, scores, drop_intermediate=False)
    assert np.allclose(fpr, sk_fpr) and np.allclose(tpr, sk_tpr)


def test_auroc_extremes_and_missing_values():
    assert auroc([3, 2, 1, 0], [True, True, False, False]) == 1.0
    assert auroc([0, 1, 2, 3], [True, True, False, False]) == 0.0
    assert auroc([1, 1, 1, 1], [True, False, True, False]) == 0.5
    assert auroc([np.nan, 0.1, 0.2], [True, False, False]) == 0.0  # missing ranks lowest


def test_auroc_needs_both_classes_and_equal_lengths():
    with pytest.raises(InvalidInputError, match="both classes"):
        auroc([0.1, 0.2], [True, True])
    with pytest.raises(InvalidInputError, match="differ in length"):
        auroc([0.1, 0.2], [True])


def test_evaluation_reports_overall_bins_and_top1():
    records = []
    for q in range(8):
        # the host puts a wrong candidate first; evidence knows better
        records.append(record(f"q{q}", f"w{q}", 0, 0.9 - q * 0.01, False, 0.1))
        records.append(record(f"q{q}", f"c{q}", 1, 0.8 - q * 0.01, True, 0.7))
        records.append(record(f"q{q}", f"v{q}", 2, 0.7 - q * 0.01, False, 0.05))
    records.append(record("qx", "cx", 0, 0.5, None, 0.3))  # unlabelled: left out
    evaluation = evaluate_records(records, bins=2, rerank=RerankConfig(alpha=0.3))
    assert evaluation.records == 24 and evaluation.unlabelled == 1 and evaluation.correct == 8
    assert evaluation.metric("evidence").auroc == 1.0
    assert evaluation.metric("host_score").auroc == pytest.approx(
        auroc([r.score for r in records[:-1]], [r.query_label == r.candidate_label for r in records[:-1]])
    )
    assert all(b is None or b == 1.0 for b in evaluation.metric("evidence").bins)
    assert evaluation.metric("layer_agreement").present == 0
    assert evaluation.top1_host == 0.0 and evaluation.top1_reranked == 1.0
    text = "\n".join(report_lines(evaluation))
    assert "evidence" in text and "host 0.000 -> re-ranked 1.000" in text


def test_evaluation_without_labels_is_a_clear_error():
    with pytest.raises(InvalidInputError, match="query_label and candidate_label"):
        evaluate_records([record("q", "c", 0, 0.5, None, 0.3)])


def test_top1_and_reliability():
    records = [
        record("a", "1", 0, 0.9, True, 0.9),
        record("a", "2", 1, 0.8, False, 0.1),
        record("b", "3", 0, 0.7, False, 0.2),
        record("b", "4", 1, 0.6, True, 0.3),
    ]
    assert top1(records) == (0.5, 2)
    bins = reliability(np.array([0.05, 0.07, 0.95, np.nan]), np.array([False, True, True, True]), bins=10)
    assert bins == [(0.0, 0.1, 0.5, 2), (0.9, 1.0, 1.0, 1)]
