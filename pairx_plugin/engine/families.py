"""The one registry of model families: everything the engine knows about a family, in one entry.

Each :class:`ModelFamily` says how to recognise the family (``matches``, by inspecting the model,
never ``type(model) is ...``), which relevance backend explains it, which canonizer parity mode
runs (the published PAIR-X code's; ``None``: parity does not support the family), which feature-map
layout its layers output (``layout``; ``None``: the generic NCHW rule) and which layer to explain by
default (``default_layer``; ``None``: the engine's stride-16 rule). The layouts, the backends' choice,
parity's canonizer and the unsupported-model message all read :data:`FAMILIES`; adding a family is
one :func:`register_family` call. Families are tried in order and specific ones come first; the last
two are generic (any BatchNorm CNN, any norm/attention model).

The module-kind predicates below (norms, attention, squeeze-excite, GeM) are the only other place
where class names are read; the canonizers and backends use them from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from .layouts import Layout, NHWCLayout, TokenGridLayout, token_grid, unwrap_backbone

if TYPE_CHECKING:  # zennit is imported lazily: reading the registry needs no LRP library
    from zennit.core import Canonizer

LayoutOf = Callable[[nn.Module, str, nn.Module, torch.Tensor], "Layout | None"]

# ----------------------------------------------------------------------------- module kinds

#: class names (timm / torchvision) of normalisation layers, besides nn.LayerNorm / GroupNorm / RMSNorm
NORM_CLASS_NAMES = frozenset(
    {"LayerNorm", "LayerNorm2d", "LayerNormFp32", "RmsNorm", "RmsNorm2d", "SimpleNorm", "RMSNorm"}
)
#: class-name fragments of modules the BatchNorm-CNN rules cannot explain
NORM_OR_ATTENTION_TAGS = ("attention", "layernorm", "groupnorm", "rmsnorm", "mlpmixer", "swin", "vit", "convnext")
GATE_NAMES = ("gate", "scale_activation", "sigmoid")


def is_norm_module(module: nn.Module) -> bool:
    """LayerNorm / GroupNorm / RMSNorm, torch's or a timm / torchvision variant."""
    rms = getattr(nn, "RMSNorm", None)
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or (rms is not None and isinstance(module, rms)):
        return True
    return type(module).__name__ in NORM_CLASS_NAMES


def is_attention_module(module: nn.Module) -> bool:
    """timm-style attention blocks (``Attention``, ``WindowAttention``, ...) computed with torch ops."""
    return type(module).__name__.endswith("Attention") and not isinstance(module, nn.MultiheadAttention)


def has_norm_or_attention(model: nn.Module) -> bool:
    """Any module the BatchNorm-CNN (zennit) rules cannot explain."""
    for module in model.modules():
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.MultiheadAttention)):
            return True
        name = type(module).__name__.lower()
        if any(tag in name for tag in NORM_OR_ATTENTION_TAGS):
            return True
    return False


def is_squeeze_excite(module: nn.Module) -> bool:
    """A squeeze-excite block (timm ``SqueezeExcite``/``SEModule``/``EffectiveSEModule``, torchvision's)."""
    if isinstance(module, nn.Sequential):
        return False
    name = type(module).__name__.lower()
    return ("squeeze" in name or name.startswith("se") or "effectivese" in name) and any(
        isinstance(getattr(module, g, None), nn.Module) for g in GATE_NAMES
    )


def is_gem_pool(module: nn.Module) -> bool:
    """A generalised-mean (GeM) pooling leaf with a ``p`` exponent."""
    name = type(module).__name__.lower()
    return ("gem" in name or "generalizedmean" in name) and hasattr(module, "p") and not list(module.children())


# ----------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class ModelFamily:
    """Everything the engine knows about one model family (see the module docstring)."""

    name: str
    description: str  # as the unsupported-model message lists it
    matches: Callable[[nn.Module], bool]
    backend: str
    parity_canonizer: Callable[[], Canonizer] | None = None
    layout: LayoutOf | None = None
    default_layer: Callable[[nn.Module], str | None] | None = None
    #: True: ``matches`` is tried on the model and on its ``.backbone``; False: on the model only
    looks_through_backbone: bool = True


FAMILIES: list[ModelFamily] = []


def register_family(family: ModelFamily, *, before: str | None = None) -> ModelFamily:
    """Add ``family`` to the registry (at the end, or before the family named ``before``)."""
    if any(f.name == family.name for f in FAMILIES):
        raise ValueError(f"model family {family.name!r} is already registered")
    names = [f.name for f in FAMILIES]
    FAMILIES.insert(names.index(before) if before in names else len(FAMILIES), family)
    return family


def matching_families(model: nn.Module) -> Iterator[ModelFamily]:
    """Every registered family ``model`` belongs to, in registry order."""
    backbone = getattr(model, "backbone", None)
    for family in FAMILIES:
        candidates = [model]
        if family.looks_through_backbone and isinstance(backbone, nn.Module):
            candidates.append(backbone)
        if any(family.matches(candidate) for candidate in candidates):
            yield family


def family_of(model: nn.Module) -> ModelFamily | None:
    """The first registered family ``model`` belongs to, or None."""
    return next(matching_families(model), None)


def supported_families_text() -> str:
    """The registry as one sentence part, for the unsupported-model message."""
    by_backend: dict[str, list[str]] = {}
    for family in FAMILIES:
        by_backend.setdefault(family.backend, []).append(family.description)
    return "; ".join(f"{backend}: {', '.join(descriptions)}" for backend, descriptions in by_backend.items())


# ----------------------------------------------------------------------------- family predicates


def _class_is(model: nn.Module, names: tuple[str, ...], package: str) -> bool:
    return type(model).__name__ in names and type(model).__module__.startswith(package + ".")


def _is_timm_nhwc(model: nn.Module) -> bool:
    return getattr(model, "output_fmt", None) == "NHWC"


def _is_vit_like(model: nn.Module) -> bool:
    blocks = getattr(model, "blocks", None)
    return isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) > 0 and token_grid(model) is not None


def _is_batchnorm_cnn(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules()) and not has_norm_or_attention(model)


def _is_norm_or_attention_model(model: nn.Module) -> bool:
    modules = list(unwrap_backbone(model)[0].modules())
    if any(isinstance(m, nn.MultiheadAttention) for m in modules):
        return False  # fused internals a function mode cannot see
    return any(is_norm_module(m) or is_attention_module(m) for m in modules)


# ----------------------------------------------------------------------------- layouts and default layers


def _inner_key(model: nn.Module, key: str) -> tuple[nn.Module, str] | None:
    """(the unwrapped model, ``key`` relative to it), or None when ``key`` is outside it."""
    inner, prefix = unwrap_backbone(model)
    return (inner, key[len(prefix) :]) if key.startswith(prefix) else None


def _timm_nhwc_layout(model: nn.Module, key: str, module: nn.Module, output: torch.Tensor) -> Layout | None:
    """timm Swin / SwinV2: every 4-d output but a convolution's is (B, H, W, C)."""
    if not isinstance(output, torch.Tensor) or output.ndim != 4 or isinstance(module, nn.Conv2d):
        return None
    found = _inner_key(model, key)
    return NHWCLayout() if found is not None and _is_timm_nhwc(found[0]) else None


def _torchvision_swin_layout(model: nn.Module, key: str, module: nn.Module, output: torch.Tensor) -> Layout | None:
    """torchvision Swin: ``features.*`` and ``norm`` are NHWC; a ``Permute`` to NHWC too, the last one is not."""
    if not isinstance(output, torch.Tensor) or output.ndim != 4 or isinstance(module, nn.Conv2d):
        return None
    found = _inner_key(model, key)
    if found is None:
        return None
    if type(module).__name__ == "Permute":
        return NHWCLayout() if list(getattr(module, "dims", [])) == [0, 2, 3, 1] else None
    local = found[1]
    return NHWCLayout() if local == "norm" or local.startswith("features") else None


def _token_layout(model: nn.Module, key: str, module: nn.Module, output: torch.Tensor) -> Layout | None:
    """ViT-style token sequences (prefix tokens then a patch grid, or the grid alone)."""
    if not isinstance(output, torch.Tensor) or output.ndim != 3:
        return None
    found = token_grid(unwrap_backbone(model)[0])
    if found is None:
        return None
    prefix, (gh, gw) = found
    if output.shape[1] == gh * gw:
        return TokenGridLayout(0, (gh, gw))  # patch-embedding outputs and other prefix-free sequences
    if output.shape[1] == prefix + gh * gw:
        return TokenGridLayout(prefix, (gh, gw))
    return None


def _stride16_from_feature_info(model: nn.Module) -> str | None:
    """The module name timm's ``feature_info`` gives for reduction 16 (last one if several)."""
    info = getattr(model, "feature_info", None)
    if not isinstance(info, list):
        return None
    names = [entry.get("module") for entry in info if isinstance(entry, dict) and entry.get("reduction") == 16]
    return names[-1] if names and names[-1] else None


def _timm_stride16_stage(model: nn.Module) -> str | None:
    """timm Swin / SwinV2 / ConvNeXt: the stride-16 stage (``layers.2`` / ``stages.2``)."""
    inner, prefix = unwrap_backbone(model)
    found = _stride16_from_feature_info(inner)
    return prefix + found if found else None


def _torchvision_features_5(model: nn.Module) -> str | None:
    """torchvision Swin / ConvNeXt: the stride-16 stage, ``features.5``."""
    inner, prefix = unwrap_backbone(model)
    features = getattr(inner, "features", None)
    if isinstance(features, nn.Sequential) and len(features) > 5:
        return f"{prefix}features.5"
    return None


def _vit_two_thirds(model: nn.Module) -> str | None:
    """ViT / DeiT / DINOv2: the block about two thirds deep (later blocks favour the prefix tokens)."""
    inner, prefix = unwrap_backbone(model)
    if not _is_vit_like(inner):
        return None
    depth = len(inner.blocks)  # type: ignore[arg-type]
    return f"{prefix}blocks.{max(0, round(depth * 2 / 3) - 1)}"


# ----------------------------------------------------------------------------- parity canonizers


def _resnet_canonizer() -> Canonizer:
    from zennit.torchvision import ResNetCanonizer

    return ResNetCanonizer()


def _leaf_order_batchnorm_merge() -> Canonizer:
    from zennit.canonizers import SequentialMergeBatchNorm

    return SequentialMergeBatchNorm()


# ----------------------------------------------------------------------------- the entries

for _family in (
    ModelFamily(
        "vit",
        "timm ViT/DeiT/DINOv2 (patch-token models)",
        lambda m: token_grid(m) is not None and _is_norm_or_attention_model(m),
        "gradient-x-input",
        layout=_token_layout,
        default_layer=_vit_two_thirds,
    ),
    ModelFamily(
        "torchvision-resnet",
        "torchvision ResNet",
        lambda m: _class_is(m, ("ResNet",), "torchvision"),
        "zennit-lrp",
        parity_canonizer=_resnet_canonizer,
    ),
    ModelFamily(
        "timm-resnet",
        "timm ResNet",
        lambda m: _class_is(m, ("ResNet",), "timm"),
        "zennit-lrp",
        parity_canonizer=_leaf_order_batchnorm_merge,
    ),
    ModelFamily(
        "timm-efficientnet",
        "timm EfficientNet/EfficientNetV2",
        lambda m: _class_is(m, ("EfficientNet", "EfficientNetFeatures"), "timm"),
        "zennit-lrp",
        parity_canonizer=_leaf_order_batchnorm_merge,
    ),
    ModelFamily(
        "timm-swin",
        "timm Swin/SwinV2 (NHWC stages)",
        _is_timm_nhwc,
        "gradient-x-input",
        layout=_timm_nhwc_layout,
        default_layer=_timm_stride16_stage,
    ),
    ModelFamily(
        "torchvision-swin",
        "torchvision Swin",
        lambda m: _class_is(m, ("SwinTransformer",), "torchvision"),
        "gradient-x-input",
        layout=_torchvision_swin_layout,
        default_layer=_torchvision_features_5,
    ),
    ModelFamily(
        "timm-convnext",
        "timm ConvNeXt",
        lambda m: type(m).__name__ == "ConvNeXt" and not type(m).__module__.startswith("torchvision."),
        "gradient-x-input",
        default_layer=_timm_stride16_stage,
    ),
    ModelFamily(
        "torchvision-convnext",
        "torchvision ConvNeXt",
        lambda m: _class_is(m, ("ConvNeXt",), "torchvision"),
        "gradient-x-input",
        default_layer=_torchvision_features_5,
    ),
    ModelFamily(
        "batchnorm-cnn",
        "other BatchNorm CNNs (e.g. MiewID: .backbone + GeM + BatchNorm1d)",
        _is_batchnorm_cnn,
        "zennit-lrp",
        looks_through_backbone=False,
    ),
    ModelFamily(
        "norm-or-attention",
        "other LayerNorm/GroupNorm/RMSNorm or timm-attention models (e.g. BiT)",
        _is_norm_or_attention_model,
        "gradient-x-input",
        looks_through_backbone=False,
    ),
):
    register_family(_family)
del _family


__all__ = [
    "FAMILIES",
    "GATE_NAMES",
    "NORM_CLASS_NAMES",
    "ModelFamily",
    "family_of",
    "has_norm_or_attention",
    "is_attention_module",
    "is_gem_pool",
    "is_norm_module",
    "is_squeeze_excite",
    "matching_families",
    "register_family",
    "supported_families_text",
]
