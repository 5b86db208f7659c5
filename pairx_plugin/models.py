"""Model specs: turn a short string into a ready model, and fingerprint a model's weights.

Accepted specs (:data:`SPEC_FORMS`):

``builtin`` / ``default``  ImageNet EfficientNet-Lite0 (``pairx_plugin.pretrained``), 224 px.
``timm:NAME``             ``timm.create_model(NAME, pretrained=False, num_classes=0)``; weights
                          only from ``weights=FILE`` (a state dict; no model hub is contacted).
                          Input size, mean and std come from timm's ``pretrained_cfg`` when known.
``hf-hub:ORG/NAME``       a timm model from the local Hugging Face cache (e.g.
                          ``hf-hub:BVRA/MegaDescriptor-T-224``); never downloads: when it is not
                          cached the error names the cache folder and the fetch command.
``local-dir:PATH``        a timm model folder (``config.json`` + weights, as ``save_for_hf`` writes).
``transformers:DIR_OR_ID`` a transformers-format folder or cached hub id (e.g.
                          ``transformers:conservationxlabs/miewid-msv3``); custom code (an
                          ``auto_map`` in config.json) runs only with ``trust_remote_code=True``.
``miewid:PATH``           a WBIA ``MiewIdNet`` state-dict checkpoint on ``efficientnetv2_rw_m``;
``miewid[BACKBONE]:PATH`` the same on another timm backbone. Strict key check.
``module:callable``       import ``module`` and call ``callable()`` (dots allowed after the colon);
                          it must return an ``nn.Module`` or a :class:`ModelBundle`.

Preprocessing (input size, mean, std) comes from the checkpoint's own config where it has one (timm's
``pretrained_cfg``, transformers' ``preprocessor_config.json``/``config.json``, a MiewID checkpoint's
``config``), else 224 px (440 px for MiewID) and ImageNet statistics. Details in
:mod:`pairx_plugin.models_hub` and :mod:`pairx_plugin.models_miewid`. Every returned model is in eval mode.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import InvalidInputError
from .pretrained import BUILTIN_MODEL_NAME, IMAGENET_MEAN, IMAGENET_STD, efficientnet_lite0_imagenet

SPEC_FORMS = (
    "'builtin' (or 'default'), 'timm:NAME' (e.g. timm:resnet18), 'hf-hub:ORG/NAME' (a cached timm hub model, "
    "e.g. hf-hub:BVRA/MegaDescriptor-T-224), 'local-dir:PATH' (a timm save_for_hf folder), "
    "'transformers:DIR_OR_ID' (e.g. transformers:conservationxlabs/miewid-msv3), 'miewid:PATH' or "
    "'miewid[BACKBONE]:PATH' (a WBIA MiewIdNet checkpoint) or 'module:callable' (e.g. mypkg.models:build)"
)
_MIEWID_SPEC = re.compile(r"^miewid(?:\[(?P<backbone>[A-Za-z0-9_.\-]+)\])?$")
DEFAULT_INPUT_SIZE = 224
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")


@dataclass(frozen=True)
class ModelBundle:
    """A model and the preprocessing it expects (square input ``input_size`` px, mean, std)."""

    model: nn.Module
    input_size: int = DEFAULT_INPUT_SIZE
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    name: str = field(default="model")


def _bad_spec(spec: object, problem: str) -> InvalidInputError:
    return InvalidInputError(f"model spec {spec!r}: {problem}; accepted forms: {SPEC_FORMS}")


def _read_state_dict(weights: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(weights)
    if not path.is_file():
        raise InvalidInputError(f"weights file {str(path)!r} not found; pass a saved state dict (.pt/.pth)")
    try:
        loaded: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InvalidInputError(
            f"weights file {str(path)!r} cannot be read as a torch state dict ({type(exc).__name__}: {exc}); "
            f"save it with torch.save(model.state_dict(), path)"
        ) from None
    for key in _WRAPPER_KEYS:  # common checkpoint wrappers: {"state_dict": {...}, "epoch": ...}
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise InvalidInputError(
            f"weights file {str(path)!r} does not hold a state dict (name -> tensor); "
            f"save it with torch.save(model.state_dict(), path)"
        )
    state = dict(loaded)
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, weights: str | os.PathLike, *, drop_prefixes: tuple[str, ...] = ()) -> None:
    """Load a state dict file strictly; mismatched names or shapes raise :class:`InvalidInputError`.

    Keys starting with one of ``drop_prefixes`` (e.g. a classifier that ``num_classes=0`` removed)
    are ignored.
    """
    state = _read_state_dict(weights)
    state = {k: v for k, v in state.items() if not any(k.startswith(p) for p in drop_prefixes)}
    from .models_miewid import state_dict_mismatch

    parts = state_dict_mismatch(state, model.state_dict(), ignore_missing_counters=True)
    if parts:
        raise InvalidInputError(
            f"weights file {str(weights)!r} does not fit the model: "
            + "; ".join(parts)
            + "; pass weights saved from the same architecture"
        )
    model.load_state_dict(state, strict=False)


def _preprocessing(
    spec: str, size: Any, mean: Any, std: Any, default_size: int = DEFAULT_INPUT_SIZE
) -> tuple[int, tuple[float, float, float], tuple[float, float, float]]:
    """(size, mean, std) checked; None parts take ``default_size`` and ImageNet statistics."""
    try:
        size_value = default_size if size is None else int(size)
        mean_value = IMAGENET_MEAN if mean is None else tuple(float(v) for v in mean)
        std_value = IMAGENET_STD if std is None else tuple(float(v) for v in std)
    except (TypeError, ValueError):
        raise _bad_spec(
            spec,
            f"its config gives input size {size!r}, mean {mean!r}, std {std!r}; "
            "expected a number and two lists of 3 numbers",
        ) from None
    if len(mean_value) != 3 or len(std_value) != 3:  # grey-scale models: ImageNet statistics on RGB input
        mean_value, std_value = IMAGENET_MEAN, IMAGENET_STD
    if size_value < 8:
        raise _bad_spec(spec, f"its config gives input size {size_value}; expected at least 8 pixels")
    return size_value, mean_value, std_value


def _timm_cfg_bundle(spec: str, model: nn.Module, name: str) -> ModelBundle:
    """A bundle whose preprocessing is timm's ``pretrained_cfg`` of ``model``."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    input_size = cfg.get("input_size") or (3, DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE)
    size, mean, std = _preprocessing(spec, input_size[-1], cfg.get("mean"), cfg.get("std"))
    return ModelBundle(model=model.eval(), input_size=size, mean=mean, std=std, name=name)


def _hub_bundle(spec: str, prefix: str, rest: str, weights: str | None, trust_remote_code: bool) -> ModelBundle:
    from . import models_hub, models_miewid

    if weights is not None:
        raise _bad_spec(spec, f"'{prefix}:' specs carry their own weights; drop weights/--weights")
    if not rest:
        raise _bad_spec(spec, f"nothing after '{prefix}:'")
    if prefix == "hf-hub":
        folder = models_hub.cached_snapshot(spec, rest)
        return _timm_cfg_bundle(spec, models_hub.timm_from_folder(spec, folder), spec)
    if prefix == "local-dir":
        folder = Path(os.path.expanduser(rest))
        if not folder.is_dir():
            raise _bad_spec(spec, f"folder {rest!r} does not exist")
        return _timm_cfg_bundle(spec, models_hub.timm_from_folder(spec, folder), spec)
    if prefix == "transformers":
        model, config, preprocessor = models_hub.load_transformers(spec, rest, trust_remote_code=trust_remote_code)
        size, mean, std = _preprocessing(spec, *models_hub.transformers_preprocessing(config, preprocessor))
        return ModelBundle(model=model, input_size=size, mean=mean, std=std, name=spec)
    match = _MIEWID_SPEC.match(prefix)
    assert match is not None  # the caller dispatches only matching prefixes
    backbone = match.group("backbone") or models_miewid.MIEWID_BACKBONE
    miewid, miewid_config = models_miewid.load_miewid_checkpoint(os.path.expanduser(rest), backbone)
    size, mean, std = _preprocessing(
        spec, *models_miewid.checkpoint_preprocessing(miewid_config), default_size=models_miewid.MIEWID_INPUT_SIZE
    )
    return ModelBundle(model=miewid, input_size=size, mean=mean, std=std, name=spec)


def _timm_bundle(spec: str, name: str, weights: str | None) -> ModelBundle:
    import timm

    if not name:
        raise _bad_spec(spec, "no model name after 'timm:'")
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise _bad_spec(spec, f"timm has no model named {name!r} (see timm.list_models())") from None
        raise
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    input_size = cfg.get("input_size") or (3, DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE)
    mean = tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in cfg.get("std", IMAGENET_STD))
    if len(mean) != 3 or len(std) != 3:  # grey-scale models: fall back to ImageNet statistics
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    if weights is not None:
        classifier = cfg.get("classifier")
        names = classifier if isinstance(classifier, (list, tuple)) else ([classifier] if classifier else [])
        load_weights(model, weights, drop_prefixes=tuple(f"{n}." for n in names))
    return ModelBundle(model=model.eval(), input_size=int(input_size[-1]), mean=mean, std=std, name=f"timm:{name}")


def _callable_bundle(spec: str, module_name: str, attr_path: str, weights: str | None) -> ModelBundle:
    if not module_name or not attr_path:
        raise _bad_spec(spec, "'module:callable' needs both parts")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise _bad_spec(spec, f"cannot import module {module_name!r} ({exc}); is it on PYTHONPATH?") from None
    for part in attr_path.split("."):
        if not hasattr(target, part):
            raise _bad_spec(spec, f"module {module_name!r} has no attribute {attr_path!r}")
        target = getattr(target, part)
    if not callable(target):
        raise _bad_spec(spec, f"{attr_path!r} is not callable")
    built = target()
    if isinstance(built, ModelBundle):
        bundle = built
    elif isinstance(built, nn.Module):
        bundle = ModelBundle(model=built, name=spec)
    else:
        raise _bad_spec(spec, f"{attr_path}() returned {type(built).__name__}, expected an nn.Module or ModelBundle")
    if weights is not None:
        load_weights(bundle.model, weights)
    bundle.model.eval()
    return bundle


def load_model_spec(
    spec: str | None, weights: str | os.PathLike | None = None, *, trust_remote_code: bool = False
) -> ModelBundle:
    """Build the model a spec names (see the module docstring); ``weights`` is an optional state dict file.

    ``trust_remote_code`` allows a ``transformers:`` model's own Python code to run (off by default).
    """
    if spec is None:
        spec = "builtin"
    if not isinstance(spec, str) or not spec.strip():
        raise _bad_spec(spec, "empty or not a string")
    spec = spec.strip()
    weights = None if weights is None else os.fspath(weights)
    if spec in ("builtin", "default"):
        model = efficientnet_lite0_imagenet()
        if weights is not None:
            load_weights(model, weights)
        return ModelBundle(
            model=model.eval(),
            input_size=DEFAULT_INPUT_SIZE,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            name=BUILTIN_MODEL_NAME,
        )
    prefix, sep, rest = spec.partition(":")
    if not sep:
        raise _bad_spec(spec, "not a known name and has no ':'")
    if prefix == "timm":
        return _timm_bundle(spec, rest.strip(), weights)
    if prefix in ("hf-hub", "local-dir", "transformers") or _MIEWID_SPEC.match(prefix):
        return _hub_bundle(spec, prefix, rest.strip(), weights, trust_remote_code)
    return _callable_bundle(spec, prefix.strip(), rest.strip(), weights)


def model_fingerprint(model: nn.Module | Mapping[str, Any]) -> str:
    """sha256 hex over every state-dict entry's name, dtype, shape and raw bytes, in order.

    The ONE model fingerprint: artifact ids use it, and ``artifacts.store.fingerprint_state_dict`` is
    an alias. ``model`` is a module or its ``state_dict()`` (non-tensor entries are skipped); equal
    weights and buffers give equal fingerprints whatever their device.

    Recomputed on every call on purpose: caching by ``id(model)`` would go stale when weights
    change in place (and ids are reused after garbage collection). Hashing EfficientNet-Lite0
    (about 4.7 M parameters, 19 MB) takes a few tens of milliseconds on one CPU core.
    """
    state = model.state_dict() if isinstance(model, nn.Module) or hasattr(model, "state_dict") else model
    if not isinstance(state, Mapping):
        raise InvalidInputError(
            f"model_fingerprint: expected a torch module or a state_dict mapping, got {type(model).__name__}"
        )
    digest = hashlib.sha256()
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            continue
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
