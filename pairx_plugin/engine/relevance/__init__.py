"""Relevance backends and the choice between them.

``backend="auto"`` takes the backend of the model's family (``engine/families.py``; the first
matching family whose backend ``supports(model)``). A configuration can also name one.
"""

from __future__ import annotations

import importlib

from torch import nn

from ...errors import ConfigError, UnsupportedModelError
from ..families import matching_families, supported_families_text
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
    cls: type[RelevanceBackend] = getattr(importlib.import_module(module_name), class_name)
    return cls


def choose_backend(
    model: nn.Module, mode: str = "conservative", name: str = "auto", optimised: bool = True
) -> RelevanceBackend:
    """The backend instance that explains ``model``: the backend of its family (``families.FAMILIES``)
    unless ``name`` is given."""
    if name != "auto":
        cls = backend_class(name)
        if not cls.supports(model):
            raise UnsupportedModelError(
                f"relevance backend {name!r} does not support {type(model).__name__}; use backend='auto'"
            )
        return cls(mode=mode, optimised=optimised)
    tried = []
    for family in matching_families(model):
        try:
            cls = backend_class(family.backend)
        except ImportError:
            continue
        tried.append(f"{family.name} -> {family.backend}")
        if cls.supports(model):
            return cls(mode=mode, optimised=optimised)
    raise UnsupportedModelError(
        f"no relevance backend supports model class {type(model).__name__}. Supported families ("
        f"{supported_families_text()}). Families matched: {tried or 'none'}"
    )


__all__ = ["BACKEND_NAMES", "RelevanceBackend", "RelevanceRun", "backend_class", "choose_backend"]
