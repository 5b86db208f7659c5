"""Explanation references for Wildbook JSON, as an additive, versioned field.

WBIA's ``json_result`` (``cm_dict``, ``inference_dict``, ...) keeps exactly its shape: nothing is
added inside ``cm_dict[quuid]``. :func:`with_explanation_refs` returns a *copy* of a json_result with
one extra top-level key, ``xpx_explanations`` = ``{"version": 1, "by_query": {quuid: [ref|null,
...]}}``, each list aligned with that cm's ``dannot_uuid_list``. A client that does not know the key
ignores it; the same data is served per pair by the plugin API ``/api/plugin/pairx/explanation/``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

REFS_KEY = "xpx_explanations"
REFS_VERSION = 1


def _uuid_text(value: Any) -> str:
    if isinstance(value, dict) and "__UUID__" in value:
        return str(value["__UUID__"])
    return str(value)


def entry_json(entry: Any) -> dict[str, Any] | None:
    """The JSON form of one index entry (or None when there is none)."""
    if entry is None:
        return None
    out: dict[str, Any] = {"database_uuid": entry.database_uuid, "config_digest": entry.config_digest}
    if entry.explanation is not None:
        out["explanation"] = entry.explanation.model_dump(mode="json")
    if entry.explanation_error is not None:
        out["explanation_error"] = entry.explanation_error.model_dump(mode="json")
    return out


def with_explanation_refs(json_result: dict[str, Any], lookup: Callable[[str, str], Any]) -> dict[str, Any]:
    """A copy of ``json_result`` plus the versioned ``xpx_explanations`` key.

    ``lookup(query_uuid, database_uuid)`` returns the index entry or None.
    """
    result = copy.deepcopy(json_result)
    by_query: dict[str, list[dict[str, Any] | None]] = {}
    for quuid, cm_entry in json_result.get("cm_dict", {}).items():
        by_query[quuid] = [entry_json(lookup(quuid, _uuid_text(d))) for d in cm_entry.get("dannot_uuid_list", [])]
    result[REFS_KEY] = {"version": REFS_VERSION, "by_query": by_query}
    return result
