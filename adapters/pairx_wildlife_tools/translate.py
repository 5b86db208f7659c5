"""Translation between wildlife-tools rows and ``MatchRecord``s, both ways."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from pairx_plugin.records import MatchRecord

from .images import image_ids, labels
from .topk import RankedCandidate

QUERY_INDEX = "query_index"
DATABASE_INDEX = "database_index"


def records_from_candidates(
    candidates: Iterable[RankedCandidate], query_dataset: Any, database_dataset: Any
) -> list[MatchRecord]:
    """One record per ranked candidate; ``extras`` keeps the similarity-matrix row and column."""
    query_ids, database_ids = image_ids(query_dataset), image_ids(database_dataset)
    query_labels, database_labels = labels(query_dataset), labels(database_dataset)
    return [
        MatchRecord(
            query_id=query_ids[c.query_index],
            candidate_id=database_ids[c.database_index],
            rank=c.rank,
            score=c.score,
            query_label=query_labels[c.query_index],
            candidate_label=database_labels[c.database_index],
            extras={QUERY_INDEX: c.query_index, DATABASE_INDEX: c.database_index},
        )
        for c in candidates
    ]


def records_to_frame(records: Sequence[MatchRecord]) -> pd.DataFrame:
    """A flat table of explained records (one row each) for pandas-minded wildlife-tools users.

    Columns: query_id, candidate_id, rank, score, query_label, candidate_label, query_index,
    database_index, same_identity, cosine, irm, mc, inlier_ratio, match_count, artifact_json, error.
    """
    rows = []
    for record in records:
        ref, error = record.explanation, record.explanation_error
        same = None
        if record.query_label is not None and record.candidate_label is not None:
            same = record.query_label == record.candidate_label
        rows.append(
            {
                "query_id": record.query_id,
                "candidate_id": record.candidate_id,
                "rank": record.rank,
                "score": record.score,
                "query_label": record.query_label,
                "candidate_label": record.candidate_label,
                QUERY_INDEX: record.extras.get(QUERY_INDEX),
                DATABASE_INDEX: record.extras.get(DATABASE_INDEX),
                "same_identity": same,
                "cosine": ref.cosine if ref else None,
                "irm": ref.metrics.irm if ref else None,
                "mc": ref.metrics.mc if ref else None,
                "inlier_ratio": ref.metrics.inlier_ratio if ref else None,
                "match_count": ref.metrics.match_count if ref else None,
                "artifact_json": ref.json_path if ref else None,
                "error": f"{error.type} at {error.stage}: {error.message}" if error else None,
            }
        )
    return pd.DataFrame(rows)
