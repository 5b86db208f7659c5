"""The lines drawn for a curator: the most relevant matches on the animal that agree on one pose change.

The engine publishes the top ``k_lines`` mutual matches by relevance product (PAIR-X's definition,
used by IRM, MC and the evidence score). In a full scene many of those join background to
background, which tells a curator nothing about the animal. When the host gives the animal's
foreground (mask or box) for *both* images, the curator lines are chosen from the layer's complete
mutual-match list instead:

1. on the animal: foreground weight f_i = fg_query × fg_candidate over the match's cells (as in the
   evidence score) at least ``SUPPORT_FOREGROUND`` (0.5);
2. consistent: inliers of the similarity transform fitted to those matches with weights r_i f_i
   (:func:`.geometry.weighted_ransac`, threshold ``INLIER_CELLS`` cells: the evidence score's own
   fit, run over all on-animal matches rather than the published top lines);
3. the most relevant ``k_lines`` of them, in relevance order.

So a curator sees which parts of the animal the model matched and where they agree; a wrong
animal typically gets far fewer lines (docs/metrics.md, "Curator lines"). Without a foreground for
both images (the centre prior is a guess, not the animal) or with ``pairx.lines: relevance`` the
curator lines are the published top lines (``selection: relevance``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .attach import SUPPORT_FOREGROUND
from .foreground import as_mask
from .geometry import INLIER_CELLS, weighted_ransac
from .scores import foreground_weights

#: the fit sees at most this many on-animal matches (the most relevant): an exhaustive two-point
#: search costs O(n³); 48 keeps it near 20 ms, and more relevant matches dominate the weight anyway
FIT_MATCHES = 48

log = logging.getLogger(__name__)

LineSelection = Literal["foreground", "relevance"]
LinesSetting = Literal["auto", "relevance"]


@dataclass(frozen=True)
class CuratorChoice:
    """The lines to draw (engine ``Match`` objects, most relevant first) and how they were chosen."""

    selection: LineSelection
    matches: list[Any]


def select_on_animal(
    query_xy: np.ndarray,
    candidate_xy: np.ndarray,
    relevance: np.ndarray,
    foreground: np.ndarray,
    threshold: float,
    k: int,
) -> np.ndarray:
    """Indices of the curator lines among n matches, most relevant first (ties keep the given order).

    query_xy / candidate_xy: (n, 2) cell centres; relevance: (n,) (negative counts as 0);
    foreground: (n,) weights f_i; threshold: inlier distance in the points' unit; k: most lines.
    """
    p = np.asarray(query_xy, float).reshape(-1, 2)
    q = np.asarray(candidate_xy, float).reshape(-1, 2)
    r = np.clip(np.asarray(relevance, float).reshape(-1), 0.0, None)
    f = np.asarray(foreground, float).reshape(-1)
    if not (len(p) == len(q) == len(r) == len(f)):
        raise ValueError(f"select_on_animal: {len(p)}, {len(q)}, {len(r)}, {len(f)} entries must be equal")
    order = np.argsort(-r, kind="stable")
    on = order[f[order] >= SUPPORT_FOREGROUND][:FIT_MATCHES]
    fit = weighted_ransac(p[on], q[on], r[on] * f[on], threshold)
    chosen = on if fit is None else on[fit.inliers]
    return chosen[: max(0, int(k))]


def choose_curator_lines(
    layer: Any,
    *,
    k_lines: int,
    setting: LinesSetting,
    input_size: tuple[tuple[int, int], tuple[int, int]],
    query_foreground: Any = None,
    candidate_foreground: Any = None,
    display_size: tuple[tuple[int, int], tuple[int, int]] | None = None,
) -> CuratorChoice:
    """The curator lines of one ``LayerExplanation``.

    input_size: (query (H, W), candidate (H, W)) of the input tensors the match points refer to;
    *_foreground: the host's mask or ``[x, y, w, h]`` box at the display size (``display_size``, same
    order; default the input sizes) or None. A bad mask or box raises ``InvalidInputError``.
    ``foreground`` selection needs both foregrounds, ``setting == "auto"`` and the complete match list
    (``layer.mutual_matches``; a layer rebuilt from stored data has only the top lines).
    """
    published = list(layer.matches[:k_lines])
    mutual: Sequence[Any] = list(getattr(layer, "mutual_matches", None) or [])
    if setting == "relevance" or query_foreground is None or candidate_foreground is None or not mutual:
        return CuratorChoice("relevance", published)
    display_size = display_size or input_size
    masks = (
        as_mask(query_foreground, display_size[0], "query foreground"),
        as_mask(candidate_foreground, display_size[1], "candidate foreground"),
    )
    p = np.array([m.query_xy for m in mutual], float).reshape(-1, 2)
    q = np.array([m.candidate_xy for m in mutual], float).reshape(-1, 2)
    f, _, cell_c = foreground_weights(layer, p, q, input_size, masks)
    r = np.array([m.relevance for m in mutual], float)
    chosen = select_on_animal(p, q, r, f, INLIER_CELLS * max(cell_c), k_lines)
    return CuratorChoice("foreground", [mutual[int(i)] for i in chosen])


def curator_lines_for(
    layer: Any, pair: Any, query: Any, candidate: Any, *, k_lines: int, setting: LinesSetting
) -> CuratorChoice:
    """:func:`choose_curator_lines` for the artifact builder: ``query``/``candidate`` are the ``LoadedImage``s.

    If the choice fails the published top lines are drawn and the error is logged: a line-selection
    problem never costs the explanation.
    """
    try:
        return choose_curator_lines(
            layer,
            k_lines=k_lines,
            setting=setting,
            input_size=(tuple(pair.query_size), tuple(pair.candidate_size)),
            query_foreground=getattr(query, "foreground", None),
            candidate_foreground=getattr(candidate, "foreground", None),
            display_size=(tuple(query.display.shape[:2]), tuple(candidate.display.shape[:2])),
        )
    except Exception:  # the explanation is worth keeping with the published lines
        log.exception("choosing the curator lines failed at %s; the published top lines are drawn", layer.key)
        return CuratorChoice("relevance", list(layer.matches[:k_lines]))
