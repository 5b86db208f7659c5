"""The evaluation figure: ROC curves and a reliability diagram, drawn with pillow (no plotting library).

Left panel: ROC curves of the host score and of the evidence score (plus IRM, MC and match count in
lighter colours), with their AUROC in the legend. Right panel: reliability of the evidence score
(or of its calibrated probability): observed share of correct records per score bin against the
diagonal, with the bin's record count.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PANEL = 420
MARGIN = 48
CURVES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("host_score", (90, 90, 90)),
    ("evidence", (214, 39, 40)),
    ("irm", (31, 119, 180)),
    ("mc", (44, 160, 44)),
    ("match_count", (148, 103, 189)),
)


def _axes(
    draw: ImageDraw.ImageDraw,
    left: int,
    top: int,
    title: str,
    xlabel: str,
    ylabel: str,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
) -> tuple[int, int, int]:
    size = PANEL - 2 * MARGIN
    x0, y0 = left + MARGIN, top + MARGIN
    draw.rectangle([x0, y0, x0 + size, y0 + size], outline=(0, 0, 0))
    for t in np.linspace(0, 1, 6):
        x = x0 + t * size
        y = y0 + size - t * size
        draw.line([x, y0 + size, x, y0 + size + 4], fill=(0, 0, 0))
        draw.text((x - 8, y0 + size + 6), f"{t:.1f}", fill=(0, 0, 0), font=font)
        draw.line([x0 - 4, y, x0, y], fill=(0, 0, 0))
        draw.text((x0 - 30, y - 6), f"{t:.1f}", fill=(0, 0, 0), font=font)
    draw.text((x0, top + 16), title, fill=(0, 0, 0), font=font)
    draw.text((x0 + size // 2 - 40, y0 + size + 22), xlabel, fill=(0, 0, 0), font=font)
    draw.text((left + 4, top + 30), ylabel, fill=(0, 0, 0), font=font)
    draw.line([x0, y0 + size, x0 + size, y0], fill=(200, 200, 200))  # chance / perfect calibration
    return x0, y0, size


def write_evaluation_plot(
    path: str | Path,
    curves: Sequence[tuple[str, np.ndarray, np.ndarray, float | None]],
    reliability: Sequence[tuple[float, float, float, int]],
    reliability_label: str,
) -> Path:
    """Write the PNG; ``curves``: (name, fpr, tpr, auroc); ``reliability``: (low, high, observed, n)."""
    image = Image.new("RGB", (2 * PANEL, PANEL), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    x0, y0, size = _axes(
        draw, 0, 0, "ROC: correct vs incorrect records", "false positive rate", "true positive rate", font
    )
    colours = dict(CURVES)
    legend_y = y0 + size - 14 * len(curves) - 4
    for index, (name, fpr, tpr, area) in enumerate(curves):
        colour = colours.get(name, (0, 0, 0))
        points = [(x0 + f * size, y0 + size - t * size) for f, t in zip(fpr, tpr)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=3 if name in ("evidence", "host_score") else 1)
        label = f"{name}: " + ("n/a" if area is None else f"{area:.3f}")
        draw.text((x0 + size // 2, legend_y + 14 * index), label, fill=colour, font=font)
    x0, y0, size = _axes(draw, PANEL, 0, f"reliability: {reliability_label}", "score", "share correct", font)
    for low, high, observed, count in reliability:
        left, right = x0 + low * size + 2, x0 + high * size - 2
        draw.rectangle([left, y0 + size - observed * size, right, y0 + size], fill=(214, 39, 40), outline=(120, 20, 20))
        draw.text((left, y0 + size - observed * size - 12), str(count), fill=(0, 0, 0), font=font)
    path = Path(path)
    image.save(path, format="PNG")
    return path
