"""Stand-in for ``query_chips_graph``, ``ensure_review_image`` and the match-thumbnail route.

Contract sections 1 and 4: ``cm_dict[str(quuid)]`` has exactly ``CM_DICT_KEYS`` (plus
``model_url``/``config_url`` when the cm has them); review images are rendered through
``qreq_.render_single_result`` for the matches, heatmask and clean versions, written with
``cv2.imwrite`` (so the array must be BGR uint8) under a name keyed by the request cfgstr, and a
render exception becomes ``'error'`` in ``dannot_extern_list``; the thumb route reads the file,
flips BGR to RGB and encodes JPEG quality 100.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .controller_inject import to_json

CM_DICT_KEYS = {
    "qannot_uuid",
    "qname_uuid",
    "qname",
    "dannot_uuid_list",
    "dname_uuid_list",
    "dname_list",
    "score_list",
    "annot_score_list",
    "fm_list",
    "fsv_list",
    "unique_name_uuid_list",
    "unique_name_list",
    "name_score_list",
    "fk_list",
    "H_list",
    "fsv_col_lbls",
    "filtnorm_aids",
    "filtnorm_fxs",
    "dannot_extern_reference",
    "dannot_extern_list",
}
OPTIONAL_CM_DICT_KEYS = {"model_url", "config_url"}
VERSIONS = ("matches", "heatmask", "clean")


def new_query_request(ibs, qaid_list, daid_list, cfgdict=None, pipeline_root="MiewId"):
    depc = ibs.depc_annot
    cls = depc.requestclass_dict.get(pipeline_root) or depc.requestclass_dict[pipeline_root.lower()]
    return cls.new(depc, qaid_list, daid_list, cfgdict, tablename=pipeline_root)


def _hash27(text):
    return hashlib.sha1(text.encode()).hexdigest()[:27]


def ensure_review_image(ibs, aid, cm, qreq_, draw_matches=False, draw_heatmask=False, use_gradcam=False):
    render_config = {
        "dpi": 150,
        "overlay": True,
        "draw_fmatches": draw_matches,
        "draw_fmatch": draw_matches,
        "show_matches": draw_matches,
        "show_ell": False,
        "show_lines": draw_matches,
        "show_ori": False,
        "heatmask": draw_heatmask,
        "vert": False,
        "draw_lbl": False,
        "draw_border": False,
        "white_background": False,
        "use_gradcam": use_gradcam,
    }
    thumbdir = Path(ibs.get_cachedir()) / "match_thumbs"
    thumbdir.mkdir(parents=True, exist_ok=True)
    # [quirk] use_gradcam is not part of the cache key
    fpath = thumbdir / (
        f"match_aids={cm.qaid},{aid}_cfgstr={_hash27(qreq_.get_cfgstr())}"
        f"_draw={draw_matches}_mask={draw_heatmask}_orientation=horizontal.jpg"
    )
    if fpath.exists():
        return str(fpath)
    image = qreq_.render_single_result(cm, aid, **render_config)
    if not cv2.imwrite(str(fpath), image):
        raise OSError(f"cv2.imwrite failed for {fpath}")
    return str(fpath)


def _name_uuid_or_nid(ibs, nid):
    return ibs.get_name_uuids(nid) if nid > 0 else int(nid)


def query_chips_graph(ibs, qaid_list, daid_list, query_config_dict=None, cache_images=True, n=20, use_gradcam=None):
    """Run the query and return the ``json_result`` dict that the job engine would encode."""
    query_config_dict = dict(query_config_dict or {})
    proot = query_config_dict.get("pipeline_root", query_config_dict.get("proot", "MiewId"))
    if use_gradcam is None:
        use_gradcam = query_config_dict.get("use_gradcam", False)
    qreq_ = new_query_request(ibs, qaid_list, daid_list, query_config_dict, pipeline_root=proot)
    cm_list = qreq_.execute()
    extern_reference = qreq_.get_pipe_hashid()
    cm_dict = {}
    for cm in cm_list:
        quuid = ibs.get_annot_uuids(cm.qaid)
        daids = [int(a) for a in cm.daid_list]
        extern_flags = [False] * len(daids)
        if cache_images:
            order = np.argsort(-np.asarray(cm.score_list), kind="stable")[:n]
            for idx in order:
                aid = daids[idx]
                try:
                    for draw_matches, draw_heatmask in ((True, False), (False, True), (False, False)):
                        path = ensure_review_image(ibs, aid, cm, qreq_, draw_matches, draw_heatmask, use_gradcam)
                        version = "matches" if draw_matches else "heatmask" if draw_heatmask else "clean"
                        link = (
                            Path(ibs.get_cachedir())
                            / "query_match"
                            / f"qreq_cfgstr_{extern_reference}"
                            / f"qannot_uuid_{quuid}"
                            / f"dannot_uuid_{ibs.get_annot_uuids(aid)}"
                            / f"version_{version}_orient_horizontal.png"
                        )
                        link.parent.mkdir(parents=True, exist_ok=True)
                        if link.is_symlink() or link.exists():
                            link.unlink()
                        link.symlink_to(path)
                    extern_flags[idx] = True
                except Exception:  # logged to render.log in WBIA; the match is kept
                    extern_flags[idx] = "error"
        dnids = [int(n_) for n_ in cm.dnid_list]
        unique_nids = [int(n_) for n_ in cm.unique_nids]
        entry = {
            "qannot_uuid": quuid,
            "qname_uuid": _name_uuid_or_nid(ibs, int(cm.qnid)),
            "qname": ibs.get_name_texts(int(cm.qnid)),
            "dannot_uuid_list": ibs.get_annot_uuids(daids),
            "dname_uuid_list": [_name_uuid_or_nid(ibs, n_) for n_ in dnids],
            "dname_list": ibs.get_name_texts(dnids),
            "score_list": cm.score_list,
            "annot_score_list": cm.annot_score_list,
            "fm_list": None,
            "fsv_list": None,
            "unique_name_uuid_list": [_name_uuid_or_nid(ibs, n_) for n_ in unique_nids],
            "unique_name_list": ibs.get_name_texts(unique_nids),
            "name_score_list": cm.name_score_list,
            "fk_list": None,
            "H_list": None,
            "fsv_col_lbls": None,
            "filtnorm_aids": None,
            "filtnorm_fxs": None,
            "dannot_extern_reference": extern_reference,
            "dannot_extern_list": extern_flags,
        }
        for attr in ("model_url", "config_url"):
            if hasattr(cm, attr):
                entry[attr] = getattr(cm, attr)
        cm_dict[str(quuid)] = entry
    result = {
        "cm_dict": cm_dict,
        "inference_dict": {},
        "query_annot_uuid_list": ibs.get_annot_uuids(list(qaid_list)),
        "database_annot_uuid_list": ibs.get_annot_uuids(list(daid_list)),
        "query_config_dict": query_config_dict,
    }
    return json.loads(to_json(result)), cm_list, qreq_


def match_thumb(ibs, extern_reference, query_annot_uuid, database_annot_uuid, version=None):
    """``GET /api/query/graph/match/thumb/``: the stored JPEG, BGR -> RGB, re-encoded at q=100."""
    version = {None: "clean", "match": "matches", "mask": "heatmask"}.get(version, version)
    assert version in VERSIONS, version
    path = (
        Path(ibs.get_cachedir())
        / "query_match"
        / f"qreq_cfgstr_{extern_reference}"
        / f"qannot_uuid_{query_annot_uuid}"
        / f"dannot_uuid_{database_annot_uuid}"
        / f"version_{version}_orient_horizontal.png"
    )
    image_bgr = cv2.imread(str(path))
    rgb = image_bgr[:, :, ::-1]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=100)
    return buf.getvalue()
