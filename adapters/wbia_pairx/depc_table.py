"""The pairwise depc table ``PairxExplanation`` (WBIA persistence of explanations).

Parents are ``[annotations, annotations]`` - not the host's score table, whose rows MiewID deletes
in ``postprocess_execute`` - with an extern PNG column (the ``heatmask`` picture, BGR on disk like
every WBIA image) and the index entry as JSON text. The table function is a generator that yields
one tuple per ``(qaid, daid)`` in input order; a pair PAIR-X cannot explain yields ``(None, json)``
with the error in the JSON instead of raising.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import cv2
import numpy as np

from pairx_plugin.errors import ArtifactError

from .config import XpxConfig
from .selection import Candidate

TABLENAME = "PairxExplanation"
COLNAMES = ["image", "artifact_json"]
FNAME = "pairx_explanations"


def read_png(fpath: str) -> np.ndarray:
    image = cv2.imread(str(fpath), cv2.IMREAD_COLOR)
    if image is None:
        raise ArtifactError(f"cannot read the PAIR-X image {fpath}; delete the table row to recompute it")
    return image


def write_png(fpath: str, image: np.ndarray) -> None:
    if not cv2.imwrite(str(fpath), image):
        raise ArtifactError(f"cannot write the PAIR-X image {fpath}; check the cache directory")


def make_table_function(get_runtime: Callable[[], Any]) -> Callable[..., Iterator[tuple]]:
    def compute_pairx_explanation(
        depc: Any, qaid_list: list[int], daid_list: list[int], config: Any = None
    ) -> Iterator[tuple]:
        ibs = depc.controller
        runtime = get_runtime()
        xpx = XpxConfig.from_mapping(config).validated()
        pairs = list(zip((int(q) for q in qaid_list), (int(d) for d in daid_list)))
        todo = [Candidate(q, d, 0, 0.0) for q, d in dict.fromkeys(pairs) if q != d]
        runtime.explain_candidates(ibs, todo, xpx)  # one shared query pass per qaid
        for qaid, daid in pairs:
            try:
                entry = runtime.ensure_entry(ibs, qaid, daid, xpx)
                image = runtime.render(ibs, qaid, daid, "heatmask", xpx) if entry.explanation else None
                yield (image, entry.model_dump_json(by_alias=True))
            except Exception as exc:  # one row per pair, always
                yield (None, json.dumps({"error": {"type": type(exc).__name__, "message": str(exc)}}))

    return compute_pairx_explanation


def register_table(
    register_preprocs: Any, annotation_table: str, configclass: type, get_runtime: Callable[[], Any]
) -> Callable:
    func = make_table_function(get_runtime)
    return register_preprocs["annot"](
        tablename=TABLENAME,
        parents=[annotation_table, annotation_table],
        colnames=COLNAMES,
        coltypes=[("extern", read_png, write_png), str],
        configclass=configclass,
        fname=FNAME,
        chunksize=None,
        rm_extern_on_delete=True,
    )(func)
