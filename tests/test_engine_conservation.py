"""Conservative mode conserves relevance (layer sum / embedding sum within 0.98–1.02) on every
supported CNN family, on models whose norm statistics, affines and biases are randomised."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from engine_support import DEVICES, randomise_norms_and_biases

from benchmarks.reference_models import miewid_like
from pairx_plugin.engine.conservation import conservation

FAMILIES = {
    "torchvision_resnet18": (lambda: torchvision.models.resnet18(), "layer3", 224),
    "timm_resnet50": (lambda: timm.create_model("resnet50", num_classes=0), "layer3", 160),
    "timm_efficientnet_lite0": (lambda: timm.create_model("efficientnet_lite0", num_classes=0), "blocks.3", 224),
    "timm_efficientnetv2_rw_m": (lambda: timm.create_model("efficientnetv2_rw_m", num_classes=0), "blocks.4", 128),
}


def test_conservative_mode_conserves_on_miewid_like(shared_dir):
    """MiewID layout (.backbone EfficientNetV2 + GeM + BatchNorm1d), BN statistics set from real images."""
    from benchmarks.reference_models import seaturtle_batch

    images = seaturtle_batch(shared_dir, 128)
    model = miewid_like(seed=0, calibration_images=images)
    c0, c1 = conservation(model, images[:1], images[2:3], "backbone.blocks.3", mode="conservative")
    assert 0.98 <= c0 <= 1.02, c0
    assert 0.98 <= c1 <= 1.02, c1


@pytest.mark.parametrize("family", list(FAMILIES))
def test_conservative_mode_conserves(family):
    make, key, size = FAMILIES[family]
    torch.manual_seed(0)
    model = randomise_norms_and_biases(make())
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    c0, c1 = conservation(model, x[:1], x[1:], key, mode="conservative")
    assert 0.98 <= c0 <= 1.02, c0
    assert 0.98 <= c1 <= 1.02, c1


def test_parity_mode_is_not_conserving_on_timm_efficientnet():
    """The published canonizers do nothing on timm EfficientNet; parity must reproduce that."""
    torch.manual_seed(0)
    model = randomise_norms_and_biases(timm.create_model("efficientnet_lite0", num_classes=0))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    c0, _ = conservation(model, x[:1], x[1:], "blocks.3", mode="parity")
    assert not 0.9 <= c0 <= 1.1


@pytest.mark.parametrize("device", DEVICES)
def test_conservation_holds_with_real_imagenet_weights(lite0_imagenet, golden_dir, device):
    import copy

    from engine_support import golden_inputs

    _, x0, x1 = golden_inputs(golden_dir, 224, "p12")
    model = lite0_imagenet if device == "cpu" else copy.deepcopy(lite0_imagenet).to(device)
    c0, c1 = conservation(model, x0.to(device), x1.to(device), "blocks.3")
    assert 0.98 <= c0 <= 1.02 and 0.98 <= c1 <= 1.02
