"""Where the animal is in a wildlife-tools dataset row, as a mask over the crop the dataset loads.

The evidence score (``pairx_plugin.evidence``) weighs each match by whether both ends sit on the
animal. wildlife-tools metadata can say where it is: a ``segmentation`` column (COCO RLE, as
``WildlifeDataset``'s ``*_mask``/``*_hide`` modes decode it with pycocotools) or a ``bbox`` column
(``[x, y, width, height]``). This module turns them into a mask of the crop that ``img_load``
produces (full image, or cut to the bbox); :class:`.images.DatasetImageSource` passes that mask
through the same display transform as the image, so it lines up with the display pixels.

No segmentation and no bbox, or ``img_load="crop_black"`` (whose crop depends on the pixels): None,
and the evidence score falls back to its centre prior.
"""

from __future__ import annotations

import ast
import json
from typing import Any

import numpy as np


def _parse(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return ast.literal_eval(value)
    return value


def _present(row: Any, column: str) -> bool:
    if column not in row.index:
        return False
    value = row[column]
    if value is None:
        return False
    return not (isinstance(value, float) and np.isnan(value))


def row_foreground(dataset: Any, index: int, crop_size: tuple[int, int]) -> np.ndarray | None:
    """(h, w) bool mask of the animal over the loaded crop of row ``index`` (``crop_size`` = (h, w)), or None."""
    metadata = getattr(dataset, "metadata", None)
    if metadata is None:
        return None
    row = metadata.iloc[index]
    mode = str(getattr(dataset, "img_load", "full"))
    if mode == "crop_black":
        return None
    bbox = [float(v) for v in _parse(row["bbox"])] if _present(row, "bbox") else None
    cropped = mode.startswith("bbox")
    if _present(row, "segmentation"):
        import pycocotools.mask as mask_coco

        full = mask_coco.decode(_parse(row["segmentation"])).astype(bool)
        if full.ndim == 3:
            full = full.any(axis=2)
        if cropped and bbox is not None:
            left, top, width, height = (round(v) for v in bbox)
            full = full[max(0, top) : top + height, max(0, left) : left + width]
        return full if full.shape == tuple(crop_size) else None
    if bbox is None:
        return None
    height, width = crop_size
    if cropped:  # the crop is the box: all of it is the animal, as far as the host knows
        return np.ones((height, width), bool)
    mask = np.zeros((height, width), bool)
    x, y, w, h = bbox
    mask[max(0, int(y)) : max(0, int(np.ceil(y + h))), max(0, int(x)) : max(0, int(np.ceil(x + w)))] = True
    return mask if mask.any() else None
