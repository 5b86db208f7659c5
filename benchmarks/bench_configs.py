"""The benchmark configurations of issue 6: which model, input size and layer, and the inputs.

Inputs are the four sea-turtle sample images at the configuration's size and their horizontal
flips (rows 0-3: image_1..image_4, rows 4-7: the same flipped). One pair is image_1 vs image_2;
the top-5 query is image_1 vs image_2, image_3, image_4, flipped image_1 and flipped image_2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from benchmarks.reference_models import miewid_like, resnet50_random, seaturtle_batch
from pairx_plugin.errors import InvalidInputError

PAIR = (0, 1)  # image_1 vs image_2
QUERY = (0, [1, 2, 3, 4, 5])  # image_1 vs image_2, image_3, image_4, flip(image_1), flip(image_2)


def _lite0(images: torch.Tensor) -> nn.Module:
    from pairx_plugin.pretrained import efficientnet_lite0_imagenet

    return efficientnet_lite0_imagenet()


def _resnet50(images: torch.Tensor) -> nn.Module:
    return resnet50_random(seed=0, calibration_images=images)


def _miewid(images: torch.Tensor) -> nn.Module:
    return miewid_like(seed=0, calibration_images=images)


@dataclass(frozen=True)
class BenchConfig:
    """One row of the table. ``build`` gets the (8, 3, S, S) sea-turtle batch (for BN calibration)."""

    name: str
    model: str
    size: int
    layer: str
    build: Callable[[torch.Tensor], nn.Module]
    weights: str


CONFIGS: dict[str, BenchConfig] = {
    c.name: c
    for c in (
        BenchConfig("lite0_224", "timm efficientnet_lite0", 224, "blocks.3", _lite0, "ImageNet (built-in)"),
        BenchConfig("lite0_440", "timm efficientnet_lite0", 440, "blocks.3", _lite0, "ImageNet (built-in)"),
        BenchConfig("resnet50_224", "torchvision resnet50", 224, "layer3", _resnet50, "random seed 0, BN calibrated"),
        BenchConfig(
            "miewid_440",
            "MiewID-like efficientnetv2_rw_m+GeM+BN1d",
            440,
            "backbone.blocks.3",
            _miewid,
            "random seed 0, BN calibrated",
        ),
    )
}


def get_config(name: str) -> BenchConfig:
    if name not in CONFIGS:
        raise InvalidInputError(f"unknown benchmark configuration {name!r}; choose one of {sorted(CONFIGS)}")
    return CONFIGS[name]


def default_shared_dir() -> Path:
    """``$PAIRX_SHARED_DIR``, else ``shared/`` inside the repo (as carried to a lent GPU), else ``../shared``."""
    import os

    if os.environ.get("PAIRX_SHARED_DIR"):
        return Path(os.environ["PAIRX_SHARED_DIR"])
    repo = Path(__file__).resolve().parents[1]
    inside = repo / "shared"
    return inside if (inside / "data" / "seaturtle_sample").is_dir() else repo.parent / "shared"


def build(config: BenchConfig, size: int, shared_dir: Path) -> tuple[nn.Module, torch.Tensor]:
    """The model (eval mode, CPU) and the (8, 3, size, size) input batch for one configuration."""
    images = seaturtle_batch(shared_dir, size, flips=True)
    model = config.build(images)
    return model.eval(), images
