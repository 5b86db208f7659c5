"""Where the animal is: a per-match foreground weight from the host's mask or box, or a documented prior.

Masks are given at the display image's size (the display image is the same crop as the model input,
so coordinates scale linearly; see ``LoadedImage``). A match end's weight is the mean of the mask
over the footprint of its feature cell in that image, so a cell half on the animal weighs 0.5.

When the host has no mask or box, :func:`centre_prior` is used: the animal is assumed to be roughly
centred (photographers and detectors frame it so), with weight 1 inside the central ellipse that
spans ``CENTRE_PRIOR_EXTENT`` of each side and falling off linearly to 0 at the image border. It is a
weak stand-in: it cannot tell a centred background from an animal, and ``EvidenceScores.foreground``
says which source was used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InvalidInputError

#: the central ellipse of full weight spans this share of the width and of the height
CENTRE_PRIOR_EXTENT = 0.6


def as_mask(foreground: object, display_size: tuple[int, int], name: str = "foreground") -> np.ndarray:
    """A float (h, w) mask in [0, 1] at ``display_size`` from a mask array or an ``[x, y, w, h]`` box.

    Raises :class:`InvalidInputError` naming ``name`` for anything else.
    """
    height, width = display_size
    if isinstance(foreground, np.ndarray) and foreground.ndim == 2:
        if foreground.shape != (height, width):
            raise InvalidInputError(
                f"{name} mask has shape {foreground.shape} but the display image is {(height, width)}; "
                "give the mask of the same crop at the display image's size"
            )
        mask = foreground.astype(np.float64)
        if mask.max(initial=0.0) > 1.0:
            mask = mask / 255.0
        return np.clip(mask, 0.0, 1.0)
    if isinstance(foreground, (Sequence, np.ndarray)) and not isinstance(foreground, str) and len(foreground) == 4:
        x, y, w, h = (float(v) for v in foreground)
        if not (w > 0 and h > 0):
            raise InvalidInputError(
                f"{name} box {list(foreground)} has no area; give [x, y, width, height] with width, height > 0"
            )
        mask = np.zeros((height, width))
        x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
        x1, y1 = min(width, int(np.ceil(x + w))), min(height, int(np.ceil(y + h)))
        if x1 <= x0 or y1 <= y0:
            raise InvalidInputError(f"{name} box {list(foreground)} lies outside the {width}x{height} display image")
        mask[y0:y1, x0:x1] = 1.0
        return mask
    raise InvalidInputError(
        f"{name} must be an (h, w) mask array or an [x, y, width, height] box in display pixels, "
        f"got {type(foreground).__name__}"
    )


def centre_prior(size: tuple[int, int]) -> np.ndarray:
    """The prior used without a host mask: 1 in the central ellipse, linear fall-off to 0 at the border."""
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width]
    u = (xx + 0.5) / width * 2.0 - 1.0
    v = (yy + 0.5) / height * 2.0 - 1.0
    radius = np.sqrt(u**2 + v**2)
    inner = CENTRE_PRIOR_EXTENT
    return np.clip((1.0 - radius) / (1.0 - inner), 0.0, 1.0)


def weights_at(
    points_xy: np.ndarray, input_size: tuple[int, int], cell_size: tuple[float, float], mask: np.ndarray
) -> np.ndarray:
    """Mean of ``mask`` over each point's cell footprint; points in input pixels, mask at any size."""
    points = np.asarray(points_xy, float).reshape(-1, 2)
    height, width = input_size
    mh, mw = mask.shape
    sx, sy = mw / width, mh / height
    out = np.empty(len(points))
    for index, (x, y) in enumerate(points):
        x0 = int(np.clip(np.floor((x - cell_size[0] / 2) * sx), 0, mw - 1))
        x1 = int(np.clip(np.ceil((x + cell_size[0] / 2) * sx), x0 + 1, mw))
        y0 = int(np.clip(np.floor((y - cell_size[1] / 2) * sy), 0, mh - 1))
        y1 = int(np.clip(np.ceil((y + cell_size[1] / 2) * sy), y0 + 1, mh))
        out[index] = float(mask[y0:y1, x0:x1].mean())
    return out
