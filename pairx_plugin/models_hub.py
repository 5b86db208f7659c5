"""Model specs that name published checkpoints: timm ``hf-hub:``/``local-dir:`` and transformers folders.

Nothing here downloads. ``hf-hub:ORG/NAME`` and a transformers hub id are read from the local Hugging
Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``, read when the
spec is loaded), whatever ``HF_HUB_OFFLINE`` says; when the files are not there the error names the
cache folder and the command that fetches them. Fetching is the user's explicit step.

Transformers models with custom code (``config.json`` with an ``auto_map``, e.g. MiewID) run that code
only with ``trust_remote_code=True`` (config key ``trust_remote_code: true``, CLI
``--trust-remote-code``); otherwise they are refused before any of it is imported.

Output rule for transformers models (:class:`EmbeddingOutput`): the forward output is reduced to the
(B, D) embedding as follows: a tensor is the embedding; a tuple or list gives its first element; a
mapping or ``ModelOutput`` gives the first of ``embeddings``, ``image_embeds``, ``pooler_output`` that
is present; the result must be a (B, D) tensor, else the model is refused with what it returned.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import InvalidInputError

EMBEDDING_KEYS = ("embeddings", "image_embeds", "pooler_output")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder as the environment names it now."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.path.expanduser(os.environ[variable]))
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(os.path.expanduser(home)) / "hub"


def _check_repo_id(spec: str, repo_id: str) -> None:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
        raise InvalidInputError(f"model spec {spec!r}: {repo_id!r} is not a hub id of the form ORG/NAME")


def cached_snapshot(spec: str, repo_id: str) -> Path:
    """The cached snapshot folder of hub repo ``repo_id`` (its ``config.json`` must be cached)."""
    from huggingface_hub import try_to_load_from_cache

    _check_repo_id(spec, repo_id)
    cache = hf_cache_dir()
    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=str(cache))
    if not isinstance(found, str):
        offline = (
            "HF_HUB_OFFLINE is set; "
            if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
            else ""
        )
        raise InvalidInputError(
            f"model spec {spec!r}: {repo_id} is not in the Hugging Face cache at {str(cache)!r} "
            f"({offline}pairx-plugin reads hub models only from that cache and never downloads); fetch it "
            f"first with `hf download {repo_id}` (huggingface_hub's CLI; older releases: "
            f"`huggingface-cli download {repo_id}`), or set HF_HUB_CACHE to the cache that holds it"
        )
    return Path(found).parent


def timm_from_folder(spec: str, folder: Path) -> nn.Module:
    """timm's ``local-dir:`` loader on ``folder`` (``config.json`` + weights), head removed (``num_classes=0``)."""
    import timm

    if not (folder / "config.json").is_file():
        raise InvalidInputError(
            f"model spec {spec!r}: {str(folder)!r} has no config.json; point local-dir: at a folder "
            "written by timm's save_for_hf (config.json and the weights file)"
        )
    try:
        return timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=0)
    except (RuntimeError, FileNotFoundError, KeyError, ValueError) as exc:
        raise InvalidInputError(
            f"model spec {spec!r}: timm cannot build the model in {str(folder)!r} ({type(exc).__name__}: {exc})"
        ) from None


def transformers_folder(spec: str, target: str) -> Path:
    """A local transformers folder, or the cached snapshot of hub id ``target``."""
    path = Path(os.path.expanduser(target))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InvalidInputError(f"model spec {spec!r}: folder {target!r} has no config.json (transformers format)")
        return path
    if path.is_absolute() or target.startswith((".", "~")) or target.count("/") != 1:
        raise InvalidInputError(f"model spec {spec!r}: {target!r} is neither a folder nor a hub id ORG/NAME")
    return cached_snapshot(spec, target)


def read_json(spec: str, path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"model spec {spec!r}: {str(path)!r} is not readable JSON ({exc})") from None
    if not isinstance(document, dict):
        raise InvalidInputError(f"model spec {spec!r}: {str(path)!r} must hold a JSON object")
    return document


def _embedding_of(output: Any) -> Any:
    if isinstance(output, (tuple, list)) and output:
        return _embedding_of(output[0])
    if isinstance(output, Mapping):
        for key in EMBEDDING_KEYS:
            if output.get(key) is not None:
                return output[key]
    return output


class EmbeddingOutput(nn.Module):
    """``model`` with its forward output reduced to the (B, D) embedding (rule in the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.model(x)
        embedding = _embedding_of(output)
        if not isinstance(embedding, torch.Tensor) or embedding.ndim != 2:
            shape = tuple(embedding.shape) if isinstance(embedding, torch.Tensor) else type(embedding).__name__
            raise InvalidInputError(
                f"{type(self.model).__name__} returned {type(output).__name__}, which does not reduce to a (B, D) "
                f"embedding (got {shape}); the rule takes a tensor, the first element of a tuple, or the "
                f"first of {list(EMBEDDING_KEYS)} of a mapping; wrap the model in a module that returns the embedding"
            )
        return embedding


def load_transformers(
    spec: str, target: str, *, trust_remote_code: bool
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """(model wrapped in :class:`EmbeddingOutput`, config.json, preprocessor_config.json or ``{}``)."""
    folder = transformers_folder(spec, target)
    config = read_json(spec, folder / "config.json")
    if config.get("auto_map") and not trust_remote_code:
        raise InvalidInputError(
            f"model spec {spec!r}: {str(folder)!r} needs its own Python code to run (config.json auto_map "
            f"{config['auto_map']}); running it is an explicit opt-in: pass --trust-remote-code or set "
            "trust_remote_code: true in the config, after checking that you trust that code"
        )
    preprocessor_file = folder / "preprocessor_config.json"
    preprocessor = read_json(spec, preprocessor_file) if preprocessor_file.is_file() else {}
    try:
        from transformers import AutoModel
    except ImportError:
        raise InvalidInputError(
            f"model spec {spec!r} needs the transformers package; "
            "install it with pip install 'pairx-plugin[transformers]'"
        ) from None
    try:
        model = AutoModel.from_pretrained(str(folder), trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise InvalidInputError(
            f"model spec {spec!r}: transformers cannot load {str(folder)!r} ({type(exc).__name__}: {exc})"
        ) from None
    return EmbeddingOutput(model).eval(), config, preprocessor


def transformers_preprocessing(config: Mapping[str, Any], preprocessor: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """(size, mean, std) from preprocessor_config.json, else config.json; None where neither says."""
    size: Any = None
    raw = preprocessor.get("crop_size") or preprocessor.get("size")
    if isinstance(raw, Mapping):
        size = raw.get("height") or raw.get("shortest_edge") or raw.get("width")
    elif raw is not None:
        size = raw
    if size is None:
        size = next((config[k] for k in ("image_size", "img_size", "input_size") if config.get(k) is not None), None)
    if isinstance(size, (list, tuple)) and size:
        size = size[-1]
    mean = preprocessor.get("image_mean") or config.get("image_mean") or config.get("mean")
    std = preprocessor.get("image_std") or config.get("image_std") or config.get("std")
    return size, mean, std
