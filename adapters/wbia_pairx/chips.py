"""An ``ImageSource`` over WBIA chips: the model sees exactly the tensor the host scored.

Pipeline (MiewID's test transform, contract section 2): ``ibs.get_annot_chips`` gives a **BGR**
uint8 HxWx3 chip (bbox cropped, theta removed, longest side 700) -> channel order -> fliplr when
``config.test.fliplr`` is set and the annotation's viewpoint is in ``config.test.fliplr_view`` ->
``Resize(h, w)`` with the aspect ratio *not* kept (bilinear, like albumentations' default) ->
ImageNet ``Normalize`` -> (1, 3, h, w) float32.

Channel order: MiewID feeds the BGR chip to the model unchanged (its training loader reads RGB, so
production embeds BGR). ``channel_order='bgr'`` (the default) reproduces that, so the explained
cosine is the scored one; ``'rgb'`` converts first, for hosts that convert. The *display* image is
always RGB (converted explicitly from the same chip, mirrored the same way), so pictures show true
colours whatever the model was fed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from pairx_plugin.errors import InvalidInputError
from pairx_plugin.images import LoadedImage, image_sha256
from pairx_plugin.pretrained import IMAGENET_MEAN, IMAGENET_STD

from .config import CHANNEL_ORDERS


def image_size_hw(host_config: Any) -> tuple[int, int]:
    """``config.data.image_size`` as (h, w); MiewID stores ``[h, w]`` (an int means square)."""
    size = host_config.data.image_size
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = (int(v) for v in size)
    return h, w


def check_chip(aid: int, chip: Any) -> np.ndarray:
    if not isinstance(chip, np.ndarray) or chip.dtype != np.uint8 or chip.ndim != 3 or chip.shape[2] != 3:
        desc = f"{chip.dtype} {chip.shape}" if isinstance(chip, np.ndarray) else type(chip).__name__
        raise InvalidInputError(
            f"annotation {aid}: ibs.get_annot_chips returned {desc}; expected an HxWx3 uint8 BGR chip "
            "(check the chip config and that the image file exists)"
        )
    if min(chip.shape[:2]) < 2:
        raise InvalidInputError(f"annotation {aid}: chip {chip.shape[:2]} is empty; check its bbox")
    return chip


def chip_to_input(chip_bgr: np.ndarray, size_hw: tuple[int, int], flip: bool, channel_order: str) -> LoadedImage:
    """Model input and display image from one BGR chip (see the module docstring)."""
    if channel_order not in CHANNEL_ORDERS:
        raise InvalidInputError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
    display = cv2.cvtColor(chip_bgr, cv2.COLOR_BGR2RGB)  # explicit: WBIA chips are BGR
    model_pixels = display if channel_order == "rgb" else chip_bgr
    if flip:
        model_pixels = model_pixels[:, ::-1]
        display = display[:, ::-1]
    h, w = size_hw
    resized = cv2.resize(np.ascontiguousarray(model_pixels), (w, h), interpolation=cv2.INTER_LINEAR)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    normalised = (resized.astype(np.float32) / 255.0 - mean) / std
    tensor = torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1))).unsqueeze(0)
    display = np.ascontiguousarray(display)
    # the hash names what the model saw (channel order, flip and size included), so artifacts of
    # differently fed inputs never share a content address
    digest = hashlib.sha256(f"{channel_order}:".encode() + image_sha256(resized).encode()).hexdigest()
    # the chip is the annotation's box: all of it is the animal as far as WBIA knows (evidence score, H6)
    return LoadedImage(
        tensor=tensor, display=display, sha256=digest, foreground=(0, 0, int(display.shape[1]), int(display.shape[0]))
    )


class WbiaChipSource:
    """``ImageSource`` whose image ids are annotation rowids as strings (``"17"``).

    Chips are read through ``ibs.get_annot_chips`` in one list call for the ids given to
    :meth:`prefetch` (the host's own batching), then one by one for anything else.
    """

    def __init__(self, ibs: Any, host_config: Any, channel_order: str = "bgr", device: str = "cpu") -> None:
        if channel_order not in CHANNEL_ORDERS:
            raise InvalidInputError(f"xpx_channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
        self.ibs = ibs
        self.size_hw = image_size_hw(host_config)
        self.fliplr = bool(getattr(host_config.test, "fliplr", False))
        self.fliplr_view = set(getattr(host_config.test, "fliplr_view", None) or [])
        self.channel_order = channel_order
        self.device = device
        self._chips: dict[int, np.ndarray] = {}

    @staticmethod
    def _aid(image_id: str | int) -> int:
        try:
            return int(image_id)
        except (TypeError, ValueError):
            raise InvalidInputError(f"image id {image_id!r} is not an annotation rowid") from None

    def prefetch(self, aids: Sequence[int]) -> None:
        todo = [int(a) for a in dict.fromkeys(aids) if int(a) not in self._chips]
        if todo:
            for aid, chip in zip(todo, self.ibs.get_annot_chips(todo, config2_=None)):
                self._chips[aid] = chip

    def load(self, image_id: str) -> LoadedImage:
        aid = self._aid(image_id)
        if aid not in self._chips:
            self._chips[aid] = self.ibs.get_annot_chips(aid, config2_=None)
        chip = check_chip(aid, self._chips[aid])
        flip = self.fliplr and self.ibs.get_annot_viewpoints(aid) in self.fliplr_view
        loaded = chip_to_input(chip, self.size_hw, flip, self.channel_order)
        if str(self.device) != "cpu":
            loaded = LoadedImage(
                tensor=loaded.tensor.to(self.device),
                display=loaded.display,
                sha256=loaded.sha256,
                foreground=loaded.foreground,
            )
        return loaded
