"""Stand-in for ``wbia.AnnotMatch`` (``wbia/algo/hots/chip_match.py``), quirks included.

``set_cannonical_name_score`` leaves ``score_list`` holding each name's score at that name's best
annotation and ``-inf`` at every other annotation of the same name; ``from_dict`` keeps only the
keyword arguments of ``initialize`` (plus UUID -> rowid conversion when given ``ibs``).
"""

from __future__ import annotations

import inspect

import numpy as np


def _group_indices(keys):
    """``vt.group_indices``: sorted unique keys and the indices of each group."""
    keys = np.asarray(keys)
    unique = np.unique(keys)
    groupxs = [np.flatnonzero(keys == k) for k in unique]
    return unique, groupxs


class AnnotMatch:
    _attr_names = [
        "qaid",
        "qnid",
        "daid_list",
        "dnid_list",
        "H_list",
        "score_list",
        "annot_score_list",
        "unique_nids",
        "name_score_list",
        "algo_annot_scores",
        "algo_name_scores",
        "model_url",
        "config_url",
    ]

    def __init__(self, *args, **kwargs):
        for name in self._attr_names:
            setattr(self, name, None)
        self.daid2_idx = None
        self.nid2_nidx = None
        self.name_groupxs = None
        if args or kwargs:
            self.initialize(*args, **kwargs)

    def initialize(
        self,
        qaid=None,
        daid_list=None,
        score_list=None,
        dnid_list=None,
        qnid=None,
        unique_nids=None,
        name_score_list=None,
        annot_score_list=None,
        autoinit=True,
        model_url=None,
        config_url=None,
    ):
        self.qaid = qaid
        self.daid_list = None if daid_list is None else np.asarray(daid_list)
        self.score_list = None if score_list is None else np.asarray(score_list)
        self.dnid_list = None if dnid_list is None else np.asarray(dnid_list)
        self.qnid = qnid
        self.unique_nids = unique_nids
        self.name_score_list = name_score_list
        self.annot_score_list = None if annot_score_list is None else np.asarray(annot_score_list)
        self.model_url = model_url
        self.config_url = config_url
        if autoinit:
            self._update_daid_index()
            if self.dnid_list is not None:
                self._update_unique_nid_index()

    def _update_daid_index(self):
        self.daid2_idx = {int(d): i for i, d in enumerate(self.daid_list)}

    def _update_unique_nid_index(self):
        unique_nids, groupxs = _group_indices(self.dnid_list)
        self.unique_nids = unique_nids
        self.nid2_nidx = {int(n): i for i, n in enumerate(unique_nids)}
        self.name_groupxs = groupxs

    def set_cannonical_name_score(self, annot_score_list, name_score_list):
        self.annot_score_list = np.asarray(annot_score_list)
        self.name_score_list = np.asarray(name_score_list)
        # [quirk] the name score goes to the name's best annotation, -inf everywhere else
        score_list = np.full(len(self.daid_list), -np.inf)
        for nidx, groupx in enumerate(self.name_groupxs):
            if len(groupx) == 0:
                continue
            best = groupx[np.argmax(self.annot_score_list[groupx])]
            score_list[best] = self.name_score_list[nidx]
        self.score_list = score_list

    def get_top_aids(self, ntop=None):
        order = np.argsort(-np.asarray(self.score_list), kind="stable")
        top = self.daid_list[order]
        return top if ntop is None else top[:ntop]

    @classmethod
    def from_dict(cls, class_dict, ibs=None):
        class_dict = dict(class_dict)
        if ibs is not None:
            if "qannot_uuid" in class_dict:
                class_dict["qaid"] = ibs.get_annot_aids_from_uuid(class_dict["qannot_uuid"])
            if "dannot_uuid_list" in class_dict:
                class_dict["daid_list"] = ibs.get_annot_aids_from_uuid(class_dict["dannot_uuid_list"])
            if "dname_list" in class_dict:
                class_dict["dnid_list"] = ibs.get_name_rowids_from_text(class_dict["dname_list"])
            if "qname" in class_dict:
                class_dict["qnid"] = ibs.get_name_rowids_from_text(class_dict["qname"])
        keep = [p for p in inspect.signature(cls.initialize).parameters if p != "self"]
        return cls(**{k: class_dict[k] for k in keep if k in class_dict})
