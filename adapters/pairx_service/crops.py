"""Box and angle crops of the service's images, bounded before anything is allocated.

ml-service's conventions: a box ``[x, y, w, h]`` with ``w`` or ``h`` zero (its padding value
``[0, 0, 0, 0]``) means "no crop"; an angle without a box rotates the whole frame; the model always
sees the crop. Every crop's output size is checked against ``max_image_pixels`` before OpenCV
allocates it, and OpenCV's own errors become an :class:`InvalidInputError` naming the box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pairx_plugin.errors import InvalidInputError
from pairx_plugin.images import crop_box

ANGLE_EPS = 1e-6  # radians; below this a box is cropped without resampling


def _describe(bbox: Sequence[float], theta: float) -> str:
    values = ", ".join(f"{float(v):.6g}" for v in bbox)
    return f"box [{values}] (theta {theta:.6g})"


def _count(value: float) -> str:
    return str(int(value)) if value < 1e15 else f"{value:.3g}"


def crop_rotated(
    rgb: np.ndarray, bbox: Sequence[float] | None, theta: float | None, max_pixels: int | None = None
) -> np.ndarray:
    """The ``(x, y, w, h)`` box with its rotation ``theta`` (radians, about the box centre) removed.

    Without a box (``None`` or zero width/height) the whole image, rotated when ``|theta|`` is not
    negligible; with ``|theta|`` below :data:`ANGLE_EPS` a plain crop; otherwise an affine warp onto a
    white canvas of the box's size. ``max_pixels`` bounds the output (checked before allocating).
    """
    angle = float(theta or 0.0)
    if not math.isfinite(angle):
        raise InvalidInputError(f"theta {theta!r} must be a finite angle in radians")
    height, width = rgb.shape[:2]
    if bbox is None or len(bbox) != 4 or float(bbox[2]) <= 0 or float(bbox[3]) <= 0:
        if bbox is not None and len(bbox) != 4:
            raise InvalidInputError(f"bbox {list(bbox)!r} must have 4 values [x, y, w, h]")
        if abs(angle) < ANGLE_EPS:
            return rgb
        bbox = (0.0, 0.0, float(width), float(height))  # rotate the whole frame
    x, y, w, h = (float(v) for v in bbox)
    label = _describe(bbox, angle)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 1 or h < 1:
        raise InvalidInputError(f"{label}: values must be finite and the size at least 1x1 px")
    out_w, out_h = float(round(w)), float(round(h))
    if abs(angle) < ANGLE_EPS:  # a plain crop is clipped to the image: at most the image's pixels
        out_w, out_h = min(out_w, float(width)), min(out_h, float(height))
    if max_pixels is not None and out_w * out_h > max_pixels:
        raise InvalidInputError(
            f"{label}: the crop would be {_count(out_w)}x{_count(out_h)} = {_count(out_w * out_h)} pixels, above "
            f"max_image_pixels={max_pixels}; send a smaller box"
        )
    if abs(angle) < ANGLE_EPS:
        return crop_box(rgb, bbox)
    import cv2

    # centres in pixel-index coordinates (cv2 puts pixel i's centre at i, not i + 0.5)
    cx, cy = x + w / 2.0 - 0.5, y + h / 2.0 - 0.5
    ox, oy = w / 2.0 - 0.5, h / 2.0 - 0.5
    c, s = math.cos(-angle), math.sin(-angle)
    # warpAffine takes the forward map image -> output: rotate by -theta about the box centre, then
    # move the box centre to the output centre
    matrix = np.array([[c, -s, ox - (c * cx - s * cy)], [s, c, oy - (s * cx + c * cy)]])
    if not np.isfinite(matrix).all() or np.abs(matrix).max() > 2**31:
        raise InvalidInputError(f"{label}: the box lies too far outside any image to be cropped")
    try:
        return cv2.warpAffine(
            rgb,
            matrix,
            (int(out_w), int(out_h)),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(255, 255, 255),
        )
    except (cv2.error, OverflowError, ValueError) as exc:  # OverflowError: a size beyond C int
        reason = " ".join(str(exc).split())[-160:]
        raise InvalidInputError(f"{label}: OpenCV could not crop it ({reason}); send a box inside the image") from None


__all__ = ["ANGLE_EPS", "crop_rotated"]
