"""Reference models and inputs for benchmarks and tests (not installed): a MiewID-like re-ID model, sea-turtle tensors.

MiewID (Wild Me's multi-species re-identification model) is timm ``efficientnetv2_rw_m`` with
GeM pooling and a BatchNorm1d neck. Its trained weights are not reachable here, so
:func:`miewid_like` builds the same architecture from a seeded random init. With the raw init the
activations grow by orders of magnitude through the blocks (the embedding reaches ~1e8 on the
sea-turtle images) and the feature maps degenerate, so mutual nearest-neighbour matching finds only a handful
of matches and a benchmark would understate the real work. Setting every BatchNorm's running statistics from one
batch of real images (``calibration_images``) makes each layer's output roughly unit-scale, as in
a trained model, which is what the engine's cost and behaviour depend on.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pairx_plugin.errors import InvalidInputError
from pairx_plugin.images import LoadedImage, load_image, prepare_image
from pairx_plugin.models_miewid import (  # one MiewID layout, shared with its checkpoint loader
    MIEWID_BACKBONE,
    GeM,  # noqa: F401 - kept for one release: imported from here by benchmarks and tests
    MiewIdLike,
    miewid_model,
)
from pairx_plugin.pretrained import IMAGENET_MEAN, IMAGENET_STD

SEATURTLE_SUBDIR = Path("data") / "seaturtle_sample"


@contextlib.contextmanager
def _seeded_init(seed: int) -> Iterator[None]:
    """Module initialisers draw from torch's global CPU generator; seed it inside a fork, so the
    caller's random state is exactly as it was afterwards (the models stay deterministic per seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _check_image_batch(images, name: str, min_batch: int = 1) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise InvalidInputError(f"{name} must be a (B, 3, H, W) float tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise InvalidInputError(f"{name} must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[0] < min_batch:
        raise InvalidInputError(
            f"{name} has {images.shape[0]} image(s); batch statistics need at least {min_batch} images "
            "(e.g. seaturtle_batch(shared_dir, size), four images and their flips)"
        )
    if not images.is_floating_point():
        raise InvalidInputError(f"{name} has dtype {images.dtype}; pass normalised float32 images")
    if not torch.isfinite(images).all():
        raise InvalidInputError(f"{name} contains NaN or infinite values")
    return images


@torch.no_grad()
def tiny_cnn(seed: int = 0) -> nn.Module:
    """A seeded two-conv network (with a BatchNorm) that every backend supports: fast data-path runs."""
    with _seeded_init(seed):
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        ).eval()


class SeededImages:
    """An image source of seeded random photos: id ``N`` (or ``imgN``) -> an (size+8)×(size+16) photo
    prepared at ``size`` px, the same in every process."""

    def __init__(self, size: int) -> None:
        self.size = size

    def load(self, image_id: str) -> LoadedImage:
        number = int(image_id.removeprefix("img"))
        rgb = np.random.default_rng(number).integers(0, 256, size=(self.size + 8, self.size + 16, 3), dtype=np.uint8)
        return prepare_image(rgb, self.size, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def calibrate_batchnorm(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Set every BatchNorm's running mean/var to the statistics of one batch of ``images``.

    Each BatchNorm's statistics are reset and its momentum set to None (cumulative average), so
    one train-mode forward leaves running stats equal to that batch's statistics, layer by layer
    on already-normalised inputs. Momenta are restored and the model is returned in eval mode
    (also when the forward fails, which also puts the old statistics back). Parameters are not
    touched and no gradients are kept.
    """
    images = _check_image_batch(images, "calibration_images", min_batch=2)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False)} for m in norms]
    done = False
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        param = next(model.parameters(), None)
        if param is not None:
            images = images.to(device=param.device, dtype=param.dtype)
        model(images)
        done = True
    finally:
        for m, momentum, buffers in zip(norms, momenta, saved, strict=True):
            m.momentum = momentum
            if not done:  # a failed forward leaves the statistics as they were
                for name, value in buffers.items():
                    getattr(m, name).copy_(value)
        model.eval()
    return model


def miewid_like(seed: int = 0, calibration_images: torch.Tensor | None = None) -> MiewIdLike:
    """A MiewID-like embedding model (2152-d for ``efficientnetv2_rw_m``), in eval mode.

    timm ``efficientnetv2_rw_m`` (``pretrained=False, num_classes=0, global_pool=""``, initialised
    from ``seed`` without touching the caller's random state) as ``.backbone``, GeM (p=3) as ``.pooling``,
    BatchNorm1d as
    ``.bn``; layer keys look like ``backbone.blocks.3``. With ``calibration_images`` (B >= 2,
    normalised (B, 3, H, W)) every BatchNorm's running statistics are set from that batch (see
    :func:`calibrate_batchnorm`); without them the raw init's activations blow up.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidInputError(f"seed must be an int, got {seed!r}")
    if calibration_images is not None:
        _check_image_batch(calibration_images, "calibration_images", min_batch=2)
    with _seeded_init(seed):
        model = miewid_model(MIEWID_BACKBONE)  # the checkpoint loader's constructor, under the forked seed
    if calibration_images is not None:
        calibrate_batchnorm(model, calibration_images)
    return model


def miewid_shaped_lite0() -> MiewIdLike:
    """The MiewID layout (``.backbone``, ``.pooling``, ``.bn``) around the built-in ImageNet EfficientNet-Lite0.

    Small and with real weights, for tests of hosts that name MiewID layers (``backbone.blocks.3``),
    e.g. the explain service configured under ``miewid-msv4.1``. Spec:
    ``benchmarks.reference_models:miewid_shaped_lite0``.
    """
    from pairx_plugin.pretrained import efficientnet_lite0_imagenet

    backbone = efficientnet_lite0_imagenet()
    backbone.reset_classifier(0, global_pool="")  # the feature map, pooled by GeM as in MiewID
    return MiewIdLike(backbone, backbone.num_features).eval()


def resnet50_random(seed: int = 0, calibration_images: torch.Tensor | None = None) -> nn.Module:
    """torchvision ResNet-50 (random init from ``seed``, the caller's random state untouched), no head: 2048-d.

    ``fc`` is replaced by identity so the model returns the pooled features, as a re-ID backbone
    would. BatchNorm statistics are calibrated like :func:`miewid_like` when ``calibration_images``
    is given. Layer keys: ``layer1`` .. ``layer4``.
    """
    from torchvision.models import resnet50

    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidInputError(f"seed must be an int, got {seed!r}")
    if calibration_images is not None:
        _check_image_batch(calibration_images, "calibration_images", min_batch=2)
    with _seeded_init(seed):
        model = resnet50(weights=None)
    model.fc = nn.Identity()
    model.eval()
    if calibration_images is not None:
        calibrate_batchnorm(model, calibration_images)
    return model


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise InvalidInputError(f"size must be an int of at least 8 pixels, got {size!r}")
    return size


def imagenet_tensor(path: str | os.PathLike, size: int) -> torch.Tensor:
    """One image file as a (1, 3, size, size) ImageNet-normalised tensor.

    EXIF orientation applied, RGB, resized like torchvision ``Resize((size, size))`` (bilinear,
    antialiased), ``ToTensor``, ``Normalize(IMAGENET_MEAN, IMAGENET_STD)``.
    """
    size = _check_size(size)
    return prepare_image(load_image(path), size, IMAGENET_MEAN, IMAGENET_STD).tensor


def seaturtle_paths(shared_dir: str | os.PathLike) -> list[Path]:
    """The sample's image files in ``metadata.csv`` order (image_1 .. image_4)."""
    root = Path(shared_dir) / SEATURTLE_SUBDIR
    metadata = root / "metadata.csv"
    if not metadata.is_file():
        raise InvalidInputError(
            f"no sea-turtle sample at {str(root)!r} (metadata.csv missing); pass the shared folder "
            "that holds data/seaturtle_sample (the repo's ../shared)"
        )
    with metadata.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "path" not in rows[0]:
        raise InvalidInputError(f"{str(metadata)!r} has no 'path' column; expected image_id,identity,path,split")
    return [root / row["path"] for row in rows]


def seaturtle_batch(shared_dir: str | os.PathLike, size: int, flips: bool = True) -> torch.Tensor:
    """The four sea-turtle sample images as an (N, 3, size, size) batch, then (``flips``) their mirror images.

    Rows 0-3 are image_1..image_4; with ``flips`` rows 4-7 are the same images flipped left-right.
    """
    size = _check_size(size)
    images = torch.cat([imagenet_tensor(path, size) for path in seaturtle_paths(shared_dir)])
    if flips:
        images = torch.cat([images, images.flip(-1)])
    return images
