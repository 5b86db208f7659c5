"""Stand-in for ``wbia.control.manual_annotmatch_funcs``: the annotmatch table and its evidence decisions.

Registered with ``make_ibs_register_decorator`` like WBIA's own module, so controllers built after
this import have the methods. Rows are undirected (the smaller aid first, as WBIA's
``add_annotmatch_undirected`` orders them); evidence decisions are WBIA's codes (0 negative,
1 positive, 2 incomparable, 3 unknown, None unreviewed).
"""

from __future__ import annotations

from .controller_inject import make_ibs_register_decorator

CLASS_INJECT_KEY, register_ibs_method = make_ibs_register_decorator(__name__)
EVIDENCE_DECISION_CODES = (None, 0, 1, 2, 3)


def _table(ibs) -> dict:
    return ibs.__dict__.setdefault("_annotmatch", {"rows": {}, "by_edge": {}})


@register_ibs_method
def add_annotmatch_undirected(ibs, aids1, aids2):
    assert len(aids1) == len(aids2), "aids1 and aids2 must have equal lengths"
    table = _table(ibs)
    rowids = []
    for a, b in zip(aids1, aids2):
        edge = (min(int(a), int(b)), max(int(a), int(b)))
        if edge not in table["by_edge"]:
            rowid = len(table["rows"]) + 1
            table["by_edge"][edge] = rowid
            table["rows"][rowid] = {"aid1": edge[0], "aid2": edge[1], "evidence_decision": None}
        rowids.append(table["by_edge"][edge])
    return rowids


@register_ibs_method
def get_annotmatch_rowid_from_undirected_superkey(ibs, aids1, aids2):
    by_edge = _table(ibs)["by_edge"]
    return [by_edge.get((min(int(a), int(b)), max(int(a), int(b)))) for a, b in zip(aids1, aids2)]


@register_ibs_method
def set_annotmatch_evidence_decision(ibs, annotmatch_rowid_list, value_list):
    assert len(annotmatch_rowid_list) == len(value_list), "one value per annotmatch row"
    rows = _table(ibs)["rows"]
    for rowid, value in zip(annotmatch_rowid_list, value_list):
        assert value in EVIDENCE_DECISION_CODES, f"not an evidence decision code: {value!r}"
        rows[rowid]["evidence_decision"] = value


@register_ibs_method
def get_annotmatch_evidence_decision(ibs, annotmatch_rowid_list):
    rows = _table(ibs)["rows"]
    return [rows[rowid]["evidence_decision"] for rowid in annotmatch_rowid_list]
