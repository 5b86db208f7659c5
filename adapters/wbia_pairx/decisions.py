"""Hand curator decisions from the review page back to WBIA as annotation-match evidence decisions.

The review page's decisions file names records by the ids the adapter gave them: ``query_id`` is
``str(qaid)``, ``candidate_id`` is ``str(daid)`` (see :mod:`wbia_pairx.runtime`). Each latest
decision becomes one undirected annotmatch row (``ibs.add_annotmatch_undirected``) with its evidence
decision set (``ibs.set_annotmatch_evidence_decision``; ``ibs.set_annotmatch_truth`` on controllers
that only have the older name), which is what WBIA's graph review and name assignment read.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pairx_plugin.decisions import Decision, latest_decisions
from pairx_plugin.errors import InvalidInputError

#: ``wbia.constants.EVIDENCE_DECISION``: NEGATIVE 0, POSITIVE 1, INCOMPARABLE 2, UNKNOWN 3 (reviewed, undecidable)
EVIDENCE_CODES: dict[str, int] = {"same": 1, "different": 0, "unsure": 3}


def _evidence_codes() -> dict[str, int]:
    try:
        from wbia.constants import EVIDENCE_DECISION
    except (ImportError, AttributeError):
        return dict(EVIDENCE_CODES)
    return {
        "same": EVIDENCE_DECISION.POSITIVE,
        "different": EVIDENCE_DECISION.NEGATIVE,
        "unsure": EVIDENCE_DECISION.UNKNOWN,
    }


def _aid(value: str, decision: Decision, role: str) -> int:
    try:
        aid = int(value)
    except ValueError:
        aid = -1
    if aid < 1 or str(aid) != value.strip():
        raise InvalidInputError(
            f"decision for record {decision.record_index} has {role} {value!r}, not a WBIA annotation id; "
            "apply only decisions from a review page of a WBIA run (ids are str(aid))"
        )
    return aid


def apply_decisions(ibs: Any, decisions: Iterable[Decision]) -> list[int]:
    """Set the annotmatch evidence decision of every decided pair; returns the annotmatch rowids in order.

    All ids are checked against ``ibs.get_valid_aids()`` first: one unknown aid raises
    :class:`InvalidInputError` naming it and nothing is written.
    """
    latest = latest_decisions(decisions)
    if not latest:
        return []
    pairs = [(_aid(d.query_id, d, "query_id"), _aid(d.candidate_id, d, "candidate_id")) for d in latest]
    valid = set(ibs.get_valid_aids())
    unknown = sorted({aid for pair in pairs for aid in pair} - valid)
    if unknown:
        raise InvalidInputError(
            f"annotation ids {unknown} are not in this WBIA database; apply the decisions to the "
            "database the run came from"
        )
    codes = _evidence_codes()
    rowids = list(ibs.add_annotmatch_undirected([a for a, _ in pairs], [b for _, b in pairs]))
    values = [codes[d.decision] for d in latest]
    setter = getattr(ibs, "set_annotmatch_evidence_decision", None) or ibs.set_annotmatch_truth
    setter(rowids, values)
    return rowids


__all__ = ["EVIDENCE_CODES", "apply_decisions"]
