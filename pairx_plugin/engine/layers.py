"""Layer keys: resolution with helpful errors, listing candidate layers, the default layer.

A layer key is a dotted submodule name (``model.get_submodule(key)``), e.g. ``blocks.3`` or
``backbone.blocks.3``. Candidate layers are the *stages* of a backbone: children of a
``Sequential``/``ModuleList`` container (``blocks.N``, ``layers.N``, ``stages.N``, ``features.N``)
and ResNet-style ``layerN`` modules, at any wrapper depth, whose output has a spatial layout the
engine understands (see ``layouts.py``).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InvalidInputError, LayerNotFoundError
from .hooks import capture_outputs
from .layouts import detect_layout
from .modelinfo import model_device

_STAGE_NAME = re.compile(r"(^|\.)layer\d+$")
_CONTAINERS = (nn.Sequential, nn.ModuleList)


@dataclass(frozen=True)
class LayerInfo:
    """One candidate layer: key, module type, NCHW output shape (C, h, w) at ``input_size``, stride."""

    key: str
    module_type: str
    output_shape: tuple[int, int, int]
    stride: float
    layout: str
    is_default: bool = False


def resolve_layers(model: nn.Module, keys: list[str]) -> dict[str, nn.Module]:
    """Map each key to its submodule; an unknown key raises naming the closest existing keys."""
    if isinstance(keys, str):
        keys = [keys]
    if not keys:
        raise InvalidInputError("layer_keys is empty: give at least one layer key (see `pairx-plugin layers`)")
    names = [name for name, _ in model.named_modules() if name]
    resolved: dict[str, nn.Module] = {}
    for key in keys:
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"layer key must be a non-empty string, got {key!r}")
        try:
            resolved[key] = model.get_submodule(key)
        except AttributeError:
            close = difflib.get_close_matches(key, names, n=5, cutoff=0.5)
            hint = (
                f"closest existing keys: {close}"
                if close
                else f"top-level modules: {[n for n in names if '.' not in n][:10]}"
            )
            raise LayerNotFoundError(
                f"layer key {key!r} not found in {type(model).__name__}; {hint}. "
                "List candidate layers with `pairx-plugin layers` or pairx_plugin.engine.layers.list_layers(model)."
            ) from None
    return resolved


def _candidate_keys(model: nn.Module) -> list[str]:
    keys = []
    for parent_name, parent in model.named_modules():
        if isinstance(parent, _CONTAINERS):
            for child_name, _ in parent.named_children():
                keys.append(f"{parent_name}.{child_name}" if parent_name else child_name)
    for name, _ in model.named_modules():
        if _STAGE_NAME.search(name) and name not in keys:
            keys.append(name)
    # drop children of containers that are themselves inside a stage (e.g. blocks.3.0): keep the
    # shallowest container level per branch
    keys = sorted(set(keys), key=lambda k: [int(p) if p.isdigit() else p for p in k.split(".")].__repr__())
    shallow = [k for k in keys if not any(k != o and k.startswith(o + ".") for o in keys)]
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(shallow, key=lambda k: order.get(k, 0))


def list_layers(model: nn.Module, input_size: int | tuple[int, int] = 224) -> list[LayerInfo]:
    """Candidate layers with their NCHW output shape and stride for an input of ``input_size``.

    Runs one no-grad forward on zeros; the model's training flag is restored.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    keys = _candidate_keys(model)
    modules = resolve_layers(model, keys) if keys else {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), capture_outputs(modules) as outputs:
            model(torch.zeros(1, 3, h, w, device=model_device(model)))
    finally:
        model.train(was_training)
    infos = []
    for key in keys:
        out = outputs.get(key)
        if not isinstance(out, torch.Tensor):
            continue
        layout = detect_layout(model, key, modules[key], out)
        if layout is None:
            continue
        fm = layout.to_nchw(out)
        if fm.ndim != 4 or fm.shape[-1] < 2 or fm.shape[-2] < 2:
            continue
        infos.append(
            LayerInfo(
                key=key,
                module_type=type(modules[key]).__name__,
                output_shape=(int(fm.shape[1]), int(fm.shape[2]), int(fm.shape[3])),
                stride=h / fm.shape[-2],
                layout=layout.name,
            )
        )
    default = _pick_default(model, infos)
    return [LayerInfo(**{**i.__dict__, "is_default": i.key == default}) for i in infos]


def _pick_default(model: nn.Module, infos: list[LayerInfo]) -> str | None:
    from .layouts import default_layer_hint

    hint = default_layer_hint(model)
    if hint and any(i.key == hint for i in infos):
        return hint
    if not infos:
        return None
    # the first stage at stride 16 (ResNet layer3, EfficientNet blocks.3, Swin layers.2); else the
    # stage whose stride is closest to 16
    at16 = [i for i in infos if abs(i.stride - 16) < 1e-6]
    if at16:
        return at16[0].key
    return min(infos, key=lambda i: (abs(i.stride - 16), -infos.index(i))).key


def default_layer_key(model: nn.Module, input_size: int | tuple[int, int] = 224) -> str:
    """The suggested layer for ``model``: the first stage at stride 16 (family hints first)."""
    infos = list_layers(model, input_size)
    for info in infos:
        if info.is_default:
            return info.key
    raise InvalidInputError(
        f"could not find a candidate layer in {type(model).__name__}; pass layer_keys explicitly "
        "(any submodule whose output is a (B, C, H, W) feature map)"
    )
