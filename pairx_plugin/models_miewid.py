"""The MiewID-shaped embedding model and the loader for WBIA ``MiewIdNet`` checkpoints.

MiewID (Wild Me's multi-species re-identification model) is a timm backbone (``efficientnetv2_rw_m``
by default) without its head, GeM pooling and a BatchNorm1d neck: ``bn(gem(backbone(x)).flatten(1))``.
The WBIA plugin saves it as a state dict with keys ``backbone.*``, ``pooling.p`` and ``bn.*`` (plus a
margin head, ``final.*``, used only in training). :func:`load_miewid_checkpoint` builds
:class:`MiewIdLike` with the named backbone and loads such a file with a strict key check: every
model key must be present with the right shape, and nothing else may be in the file except the
training head (``final.*``), which is dropped.

Preprocessing: the checkpoint's own config when the file carries one (a ``config``/``cfg`` mapping
beside the state dict, with ``image_size``/``img_size`` and ``mean``/``std`` at its top level or under
``data``), else :data:`MIEWID_INPUT_SIZE` px with ImageNet statistics (WBIA's MiewID setting).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import InvalidInputError

MIEWID_BACKBONE = "efficientnetv2_rw_m"
MIEWID_INPUT_SIZE = 440
#: state-dict prefixes of the training-only margin head (ArcFace / ElasticArcFace), not part of the embedding
TRAINING_HEAD_PREFIXES = ("final.",)
_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net")
_CONFIG_KEYS = ("config", "cfg")


class GeM(nn.Module):
    """Generalised-mean pooling over H and W: ``mean(clamp(x, eps) ** p) ** (1 / p)``, learnable ``p``.

    p = 1 is average pooling; larger p moves towards max pooling. (B, C, H, W) -> (B, C, 1, 1).
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        powered = x.clamp(min=self.eps).pow(self.p)
        return powered.mean(dim=(-2, -1), keepdim=True).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={float(self.p.detach()[0]):.4f}, eps={self.eps}"


class MiewIdLike(nn.Module):
    """``bn(pooling(backbone(x)).flatten(1))``: the MiewID layout (``.backbone``, ``.pooling``, ``.bn``)."""

    def __init__(self, backbone: nn.Module, num_features: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = GeM(p=3.0)
        self.bn = nn.BatchNorm1d(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pooling(self.backbone(x)).flatten(1))


def miewid_model(backbone: str = MIEWID_BACKBONE) -> MiewIdLike:
    """An untrained :class:`MiewIdLike` on timm ``backbone`` (``num_classes=0, global_pool=""``), eval mode."""
    import timm

    try:
        trunk = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="")
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise InvalidInputError(
                f"MiewID backbone {backbone!r} is not a timm model; name one from timm.list_models() "
                f"(MiewID uses {MIEWID_BACKBONE!r})"
            ) from None
        raise
    features = trunk.num_features
    if not isinstance(features, int):
        raise InvalidInputError(f"timm model {backbone!r} does not report num_features; it cannot be a MiewID backbone")
    return MiewIdLike(trunk, features).eval()


def state_dict_mismatch(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], *, ignore_missing_counters: bool = False
) -> list[str]:
    """How ``state`` fails to fit a model whose state dict is ``expected``: one phrase each for missing,
    unexpected and wrongly shaped keys (empty when it fits). ``ignore_missing_counters``: BatchNorm's
    ``num_batches_tracked`` may be absent (older checkpoints, strict=False loads)."""
    missing = [
        k for k in expected if k not in state and not (ignore_missing_counters and k.endswith("num_batches_tracked"))
    ]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    if wrong_shape:
        parts.append(f"{len(wrong_shape)} with the wrong shape (e.g. {wrong_shape[:3]})")
    return parts


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], Mapping[str, Any]]:
    if not path.is_file():
        raise InvalidInputError(f"MiewID checkpoint {str(path)!r} not found; pass the .bin/.pth file WBIA saved")
    try:
        loaded: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for a file that is no checkpoint
        raise InvalidInputError(
            f"MiewID checkpoint {str(path)!r} cannot be read as a torch state dict ({type(exc).__name__}: {exc})"
        ) from None
    config: Mapping[str, Any] = {}
    if isinstance(loaded, Mapping):
        config = next((loaded[k] for k in _CONFIG_KEYS if isinstance(loaded.get(k), Mapping)), {})
        for key in _STATE_KEYS:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise InvalidInputError(
            f"MiewID checkpoint {str(path)!r} does not hold a state dict (name -> tensor) with backbone.*, "
            "pooling.p and bn.* keys"
        )
    state = {str(k): v for k, v in loaded.items()}
    if all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state, config


def _config_value(config: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for scope in (config, config.get("data") if isinstance(config.get("data"), Mapping) else {}):
        for name in names:
            if name in scope:  # type: ignore[operator]
                return scope[name]  # type: ignore[index]
    return None


def checkpoint_preprocessing(
    config: Mapping[str, Any],
) -> tuple[int, tuple[float, ...] | None, tuple[float, ...] | None]:
    """(input size, mean, std) from a checkpoint's config; size :data:`MIEWID_INPUT_SIZE` and None when absent."""
    size = _config_value(config, ("image_size", "img_size", "input_size"))
    if isinstance(size, (list, tuple)) and size:
        size = size[-1]
    mean = _config_value(config, ("mean", "image_mean"))
    std = _config_value(config, ("std", "image_std"))
    try:
        parsed_size = MIEWID_INPUT_SIZE if size is None else int(size)
        parsed_mean = None if mean is None else tuple(float(v) for v in mean)
        parsed_std = None if std is None else tuple(float(v) for v in std)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"the checkpoint's config has image_size={size!r}, mean={mean!r}, std={std!r}; expected a number "
            "and two lists of 3 numbers"
        ) from None
    if (parsed_mean is not None and len(parsed_mean) != 3) or (parsed_std is not None and len(parsed_std) != 3):
        raise InvalidInputError(f"the checkpoint's config mean {mean!r} / std {std!r} must have 3 values (RGB)")
    return parsed_size, parsed_mean, parsed_std


def load_miewid_checkpoint(
    path: str | os.PathLike, backbone: str = MIEWID_BACKBONE
) -> tuple[MiewIdLike, Mapping[str, Any]]:
    """(model with the checkpoint's weights in eval mode, the checkpoint's config or ``{}``); strict key check."""
    path = Path(path)
    state, config = _read_checkpoint(path)
    state = {k: v for k, v in state.items() if not k.startswith(TRAINING_HEAD_PREFIXES)}
    model = miewid_model(backbone)
    parts = state_dict_mismatch(state, model.state_dict())
    if parts:
        raise InvalidInputError(
            f"MiewID checkpoint {str(path)!r} does not fit MiewIdNet on backbone {backbone!r}: "
            + "; ".join(parts)
            + "; name the backbone it was trained with (miewid[BACKBONE]:PATH) or pass a MiewIdNet state dict"
        )
    model.load_state_dict(state, strict=True)
    return model.eval(), config
