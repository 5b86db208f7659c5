"""The evidence score of one explained pair: components and one combined number in [0, 1].

Formulas (docs/metrics.md has the worked example). For the top ``k_lines`` matches i of a layer, with
relevance r_i, normalised weights ŵ_i = r_i / Σ r, foreground weight f_i = fg_query(i) × fg_candidate(i)
(see :mod:`.foreground`), g_i = 1 when match i is an inlier of the relevance-weighted similarity fit
(:mod:`.geometry`, weights ŵ_i f_i, threshold ``INLIER_CELLS`` cells) and Lowe's ratio ρ_i:

* ``on_animal``       = Σ ŵ_i f_i                         share of relevance on the animal at both ends
* ``geometric``       = Σ ŵ_i f_i g_i / Σ ŵ_i f_i          share of the animal's relevance that one transform explains
* ``support``         = 1 − exp(−n / SUPPORT_SCALE), n = Σ f_i g_i   (two points always fit; a handful must)
* ``distinctiveness`` = Σ ŵ_i f_i (1 − ρ_i) / Σ ŵ_i f_i   how unique the animal's matched cells are
* ``layer_agreement`` = on-animal relevance share (ŵ f) of every other explained layer's matches that this
  layer's transform maps within ``INLIER_CELLS`` of that layer's cells (mean over layers; None with one layer)
* ``score`` = on_animal × geometric × support × (layer_agreement when present)
  = (share of all relevance that is on the animal *and* geometrically consistent) × support.

Distinctiveness is reported but left out of the product: on the development set (scene set of
:mod:`pairx_wildlife_tools.synthetic_scenes`) it added no separation beyond the other three and its
scale depends on the layer's feature statistics (see docs/metrics.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .foreground import as_mask, centre_prior, weights_at
from .geometry import INLIER_CELLS, GeometricFit, transfer_agreement, weighted_ransac
from .models import EvidenceScores, ForegroundSource

#: n foreground inliers give support 1 − exp(−n / SUPPORT_SCALE): 2 → 0.39, 4 → 0.63, 8 → 0.86
SUPPORT_SCALE = 4.0


@dataclass(frozen=True)
class LayerGeometry:
    """Per-match detail behind one layer's scores (for figures and cross-layer checks)."""

    fit: GeometricFit | None
    threshold: float  # inlier distance in input pixels
    query_xy: np.ndarray
    candidate_xy: np.ndarray
    weights: np.ndarray  # normalised relevance x foreground
    foreground: np.ndarray  # f_i per match
    inliers: np.ndarray  # g_i per match (bool)


def _foreground(value: Any, display_size: tuple[int, int], name: str) -> tuple[np.ndarray, ForegroundSource]:
    if value is None:
        return centre_prior(display_size), "centre_prior"
    source: ForegroundSource = "mask" if isinstance(value, np.ndarray) and value.ndim == 2 else "box"
    return as_mask(value, display_size, name), source


def _layer_arrays(layer: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    matches = list(layer.matches)
    p = np.array([m.query_xy for m in matches], float).reshape(-1, 2)
    q = np.array([m.candidate_xy for m in matches], float).reshape(-1, 2)
    r = np.clip(np.array([m.relevance for m in matches], float), 0.0, None)
    ratios = [getattr(m, "ratio", None) for m in matches]
    ratio = None if not matches or any(v is None for v in ratios) else np.array(ratios, float)
    return p, q, r, ratio


def _cell_size(layer: Any, input_size: tuple[int, int], which: str) -> tuple[float, float]:
    grid = np.asarray(getattr(layer, f"relevance_{which}")).shape
    return input_size[1] / grid[1], input_size[0] / grid[0]


def foreground_weights(
    layer: Any,
    query_xy: np.ndarray,
    candidate_xy: np.ndarray,
    sizes: tuple[tuple[int, int], tuple[int, int]],
    masks: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """f_i = fg_query × fg_candidate over each match's cells, and the query's and candidate's cell
    sizes (x, y) in input pixels. sizes: (query (H, W), candidate (H, W)) of the input tensors the
    points refer to; masks: the query's and candidate's foreground masks (see :mod:`.foreground`)."""
    cell_q = _cell_size(layer, sizes[0], "query")
    cell_c = _cell_size(layer, sizes[1], "candidate")
    f = weights_at(query_xy, sizes[0], cell_q, masks[0]) * weights_at(candidate_xy, sizes[1], cell_c, masks[1])
    return f, cell_q, cell_c


def layer_evidence(
    layer: Any,
    query_size: tuple[int, int],
    candidate_size: tuple[int, int],
    query_mask: np.ndarray,
    candidate_mask: np.ndarray,
    source: ForegroundSource,
) -> tuple[EvidenceScores, LayerGeometry]:
    """Evidence of one ``LayerExplanation``, and its fit, points and on-animal weights for cross-layer checks."""
    p, q, r, ratio = _layer_arrays(layer)
    f, _, cell_c = foreground_weights(layer, p, q, (query_size, candidate_size), (query_mask, candidate_mask))
    threshold = INLIER_CELLS * max(cell_c)
    if len(r) == 0 or r.sum() <= 0:
        empty = EvidenceScores(score=0.0, on_animal=0.0, geometric=0.0, support=0.0, inliers=0, foreground=source)
        return empty, LayerGeometry(None, threshold, p, q, np.zeros(len(r)), np.zeros(len(r)), np.zeros(len(r), bool))
    w = r / r.sum()
    on_mass = float((w * f).sum())
    fit = weighted_ransac(p, q, w * f, threshold)
    g = fit.inliers.astype(float) if fit is not None else np.zeros(len(w))
    geometric = float((w * f * g).sum() / on_mass) if on_mass > 0 else 0.0
    support = 1.0 - math.exp(-float((f * g).sum()) / SUPPORT_SCALE)
    distinct = None
    if ratio is not None and on_mass > 0:
        distinct = float(np.clip((w * f * (1.0 - ratio)).sum() / on_mass, 0.0, 1.0))
    scores = EvidenceScores(
        score=float(np.clip(on_mass * geometric * support, 0.0, 1.0)),
        on_animal=float(np.clip(on_mass, 0.0, 1.0)),
        geometric=float(np.clip(geometric, 0.0, 1.0)),
        support=float(support),
        distinctiveness=distinct,
        inliers=int(g.sum()),
        scale=None if fit is None else fit.scale,
        foreground=source,
    )
    return scores, LayerGeometry(fit, threshold, p, q, w * f, f, g.astype(bool))


def pair_evidence(
    pair: Any,
    *,
    query_foreground: Any = None,
    candidate_foreground: Any = None,
    query_display_size: tuple[int, int] | None = None,
    candidate_display_size: tuple[int, int] | None = None,
) -> dict[str, EvidenceScores]:
    """Evidence per explained layer of a ``PairExplanation`` (see :func:`pair_evidence_details`)."""
    details = pair_evidence_details(
        pair,
        query_foreground=query_foreground,
        candidate_foreground=candidate_foreground,
        query_display_size=query_display_size,
        candidate_display_size=candidate_display_size,
    )
    return {key: scores for key, (scores, _) in details.items()}


def pair_evidence_details(
    pair: Any,
    *,
    query_foreground: Any = None,
    candidate_foreground: Any = None,
    query_display_size: tuple[int, int] | None = None,
    candidate_display_size: tuple[int, int] | None = None,
) -> dict[str, tuple[EvidenceScores, LayerGeometry]]:
    """Evidence per explained layer of a ``PairExplanation``.

    query_foreground / candidate_foreground: the host's mask ((h, w) array) or box ([x, y, w, h]) at
    the display image's size (``*_display_size``, (h, w); default the input size), or None for the
    centre prior. With several layers, each layer's score is multiplied by its agreement with the
    other layers' matches.
    """
    query_display_size = query_display_size or tuple(pair.query_size)
    candidate_display_size = candidate_display_size or tuple(pair.candidate_size)
    query_mask, query_source = _foreground(query_foreground, query_display_size, "query foreground")
    candidate_mask, candidate_source = _foreground(candidate_foreground, candidate_display_size, "candidate foreground")
    source: ForegroundSource = query_source if query_source == candidate_source else "centre_prior"
    if "centre_prior" not in (query_source, candidate_source) and query_source != candidate_source:
        source = "box"  # a mask on one side and a box on the other: the coarser of the two
    results: dict[str, tuple[EvidenceScores, LayerGeometry]] = {
        key: layer_evidence(
            layer, tuple(pair.query_size), tuple(pair.candidate_size), query_mask, candidate_mask, source
        )
        for key, layer in pair.layers.items()
    }
    if len(results) < 2:
        return results
    out = {}
    for key, (scores, geometry) in results.items():
        agreements = []
        for other_key, (_, other) in results.items():
            if other_key == key:
                continue
            agreements.append(
                0.0
                if geometry.fit is None
                else transfer_agreement(
                    geometry.fit, other.query_xy, other.candidate_xy, other.weights, other.threshold
                )
            )
        agreement = float(np.clip(np.mean(agreements), 0.0, 1.0))  # sums of shares can round past 1
        update = {"layer_agreement": agreement, "score": float(np.clip(scores.score * agreement, 0.0, 1.0))}
        out[key] = (EvidenceScores.model_validate(scores.model_dump() | update), geometry)
    return out
