"""The model-family registry: one entry per family decides backend, parity canonizer, layout and
default layer; every consumer reads it."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn

from pairx_plugin.engine import families
from pairx_plugin.engine.families import (
    FAMILIES,
    ModelFamily,
    family_of,
    register_family,
)
from pairx_plugin.engine.layers import default_layer_key
from pairx_plugin.engine.relevance import choose_backend
from pairx_plugin.errors import UnsupportedModelError


class Wrapped(nn.Module):
    """A MiewID-like wrapper: the family is recognised through ``.backbone``."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


@pytest.mark.parametrize(
    "make, family, backend",
    [
        (lambda: timm.create_model("resnet18", num_classes=0), "timm-resnet", "zennit-lrp"),
        (lambda: timm.create_model("efficientnet_lite0", num_classes=0), "timm-efficientnet", "zennit-lrp"),
        (lambda: Wrapped(timm.create_model("efficientnet_lite0", num_classes=0)), "timm-efficientnet", "zennit-lrp"),
        (lambda: torchvision.models.resnet18(), "torchvision-resnet", "zennit-lrp"),
        (lambda: timm.create_model("convnext_atto", num_classes=0), "timm-convnext", "gradient-x-input"),
        (lambda: timm.create_model("swin_tiny_patch4_window7_224", num_classes=0), "timm-swin", "gradient-x-input"),
        (
            lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3)),
            "batchnorm-cnn",
            "zennit-lrp",
        ),
    ],
)
def test_each_family_is_recognised_and_gets_its_backend(make, family, backend):
    model = make().eval()
    assert family_of(model).name == family
    assert choose_backend(model).name == backend


def test_parity_canonizer_comes_from_the_registry():
    generic = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten())
    backend = choose_backend(generic, mode="parity")
    with (
        pytest.raises(UnsupportedModelError, match="parity mode .*torchvision ResNet, timm ResNet"),
        backend.run(generic),
    ):
        pass
    assert all(f.parity_canonizer is None for f in FAMILIES if f.backend != "zennit-lrp")


def test_unsupported_model_message_lists_the_registry():
    with pytest.raises(UnsupportedModelError) as refused:
        choose_backend(nn.Sequential(nn.Linear(3, 3)))
    for family in FAMILIES:
        assert family.description in str(refused.value)


def test_a_registered_family_decides_the_default_layer(monkeypatch):
    monkeypatch.setattr(families, "FAMILIES", list(FAMILIES))  # registration is undone after the test
    model = timm.create_model("resnet18", num_classes=0).eval()
    assert default_layer_key(model, 64) == "layer3"
    register_family(
        ModelFamily(
            "test-resnet-layer2", "a test family", lambda m: m is model, "zennit-lrp", default_layer=lambda m: "layer2"
        ),
        before="timm-resnet",
    )
    assert family_of(model).name == "test-resnet-layer2"
    assert default_layer_key(model, 64) == "layer2"
    with pytest.raises(ValueError, match="already registered"):
        register_family(ModelFamily("timm-resnet", "again", lambda m: False, "zennit-lrp"))
