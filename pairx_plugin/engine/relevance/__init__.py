"""Relevance backends and the choice between them.

Backends are tried in ``BACKEND_NAMES`` order; the first whose ``supports(model)`` is true wins
(``backend="auto"``). A configuration can also name one.
"""
from __future__ import annotations

import importlib

from torch import nn

from ...errors import ConfigError, UnsupportedModelError
from .base import RelevanceBackend, RelevanceRun

#: name -> "module:Class"; imported lazily so an optional backend cannot break the others
BACKEND_NAMES: dict[str, str] = {
    "zennit-lrp": "pairx_plugin.engine.relevance.zennit_lrp:ZennitLRP",
    "gradient-x-input": "pairx_plugin.engine.relevance.gradient_x_input:GradientXInput",
    "gradient-x-input-gamma": "pairx_plugin.engine.relevance.gradient_x_input:GradientXInputGamma",
}


def backend_class(name: str) -> type[RelevanceBackend]:
    if name not in BACKEND_NAMES:
        raise ConfigError(f"unknown relevance backend {name!r}; choose one of {sorted(BACKEND_NAMES)} or 'auto'")
    module_name, class_name = BACKEND_NAMES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def choose_backend(model: nn.Module, mode: str = "conservative", name: str = "auto",
                   optimised: bool = True) -> RelevanceBackend:
    """The backend instance that explains ``model`` (by inspection unless ``name`` is given)."""
    if name != "auto":
        cls = backend_class(name)
        if not cls.supports(model):
            raise UnsupportedModelError(
                f"relevance backend {name!r} does not support {type(model).__name__}; use backend='auto'"
            )
        return cls(mode=mode, optimised=optimised)
    tried = []
    for candidate in BACKEND_NAMES:
        try:
            cls = backend_class(candidate)
        except ImportError:
            continue
        tried.append(candidate)
        if cls.supports(model):
            return cls(mode=mode, optimised=optimised)
    raise UnsupportedModelError(
        f"no relevance backend supports model class {type(model).__name__}. Supported: torchvision/timm "
        "ResNet, timm EfficientNet/EfficientNetV2 (also wrapped as .backbone), and (gradient-x-input) timm "
        f"Swin/SwinV2/ViT/DeiT/DINOv2, timm/torchvision ConvNeXt, torchvision Swin, GroupNorm ResNets (BiT). Backends tried: {tried}"
    )


__all__ = ["RelevanceBackend", "RelevanceRun", "choose_backend", "backend_class", "BACKEND_NAMES"]
