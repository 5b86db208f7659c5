"""A picture of where one pair's evidence comes from (docs/metrics.md's worked example uses it).

Query and candidate side by side, the background dimmed where the foreground weight is 0, and every
top match drawn as a line, its width growing with relevance: green when it is on the animal and
agrees with the fitted transform (it counts towards the score), orange when it is on the animal
but disagrees, grey when it is off the animal. The components are written underneath.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .foreground import centre_prior
from .models import EvidenceScores
from .scores import LayerGeometry

AGREES = (40, 200, 60)
DISAGREES = (255, 150, 0)
OFF_ANIMAL = (170, 170, 170)
FOOTER = 58


def _dimmed(display: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    weight = centre_prior(display.shape[:2]) if mask is None else mask.astype(float)
    if weight.shape != display.shape[:2]:
        weight = np.asarray(Image.fromarray((weight * 255).astype(np.uint8)).resize(display.shape[1::-1])) / 255.0
    return (display * (0.35 + 0.65 * weight[..., None])).astype(np.uint8)


def evidence_figure(
    query_display: np.ndarray,
    candidate_display: np.ndarray,
    geometry: LayerGeometry,
    relevance: Any,
    scores: EvidenceScores,
    input_size: tuple[int, int],
    query_mask: np.ndarray | None = None,
    candidate_mask: np.ndarray | None = None,
    title: str = "",
) -> Image.Image:
    """The figure for one layer of one pair; displays (h, w, 3) uint8, masks at the display sizes."""
    left = _dimmed(query_display, query_mask)
    right = _dimmed(candidate_display, candidate_mask)
    height = max(left.shape[0], right.shape[0])
    canvas = Image.new("RGB", (left.shape[1] + right.shape[1], height + FOOTER), (255, 255, 255))
    canvas.paste(Image.fromarray(left), (0, 0))
    canvas.paste(Image.fromarray(right), (left.shape[1], 0))
    draw = ImageDraw.Draw(canvas)
    qs = (left.shape[1] / input_size[1], left.shape[0] / input_size[0])
    cs = (right.shape[1] / input_size[1], right.shape[0] / input_size[0])
    rel = np.asarray(relevance, float)
    widths = 1 + 3 * rel / rel.max() if len(rel) and rel.max() > 0 else np.ones(len(rel))
    order = np.argsort(rel)  # strongest last, on top
    for i in order:
        (qx, qy), (cx, cy) = geometry.query_xy[i], geometry.candidate_xy[i]
        colour = OFF_ANIMAL if geometry.foreground[i] < 0.5 else (AGREES if geometry.inliers[i] else DISAGREES)
        start = (qx * qs[0], qy * qs[1])
        end = (left.shape[1] + cx * cs[0], cy * cs[1])
        draw.line([start, end], fill=colour, width=round(float(widths[i])))
        for x, y in (start, end):
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    font = ImageFont.load_default()
    distinct = float("nan") if scores.distinctiveness is None else scores.distinctiveness
    lines = [
        title,
        (
            f"evidence {scores.score:.3f} = on_animal {scores.on_animal:.2f} x geometric {scores.geometric:.2f} "
            f"x support {scores.support:.2f} ({scores.inliers} inliers); distinctiveness {distinct:.2f}; "
            f"foreground: {scores.foreground}"
        ),
        "lines: green on the animal and agreeing; orange on the animal, disagreeing; grey off the animal",
    ]
    for row, text in enumerate(lines):
        draw.text((4, height + 4 + 17 * row), text, fill=(0, 0, 0), font=font)
    return canvas
