"""Models obtained through the host's loader, cached per (model_url, device), one lock each.

The host loader is MiewID's ``read_config_and_load_model(species) -> (model, config, (model_url,
config_url))``; it reloads weights on every call and many species aliases share one model. The
cache calls it once per species text, then keeps one model instance per ``(model_url, device)``:
a second alias of the same weights reuses the first instance (the fresh copy is dropped). The
device is the host's ``config.engine.device`` when ``config.use_gpu`` is true and CUDA is
available, else CPU. All explaining on one instance happens under the engine's per-model lock
(:func:`pairx_plugin.engine.locks.model_lock`: zennit patches modules in place while it runs).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pairx_plugin.config import DEVICE_PATTERN, resolve_device
from pairx_plugin.engine.locks import model_lock
from pairx_plugin.errors import PairXError, UnsupportedModelError

HostLoader = Callable[[str], tuple[Any, Any, tuple[str, str]]]


@dataclass
class CachedModel:
    model: torch.nn.Module
    host_config: Any
    model_url: str
    config_url: str
    device: str

    @property
    def lock(self) -> threading.RLock:
        """The engine's lock for this model (kept for one release: use ``model_lock(cached.model)``)."""
        return model_lock(self.model)


def host_device(host_config: Any) -> str:
    """CPU unless the host config asks for a GPU (``use_gpu``) and one is there.

    The host's ``engine.device`` (``cuda`` or ``cuda:N``; anything else means ``cuda``) is checked by
    :func:`pairx_plugin.config.resolve_device`, so a GPU index the machine lacks is a clear error.
    """
    if not getattr(host_config, "use_gpu", False) or not torch.cuda.is_available():
        return "cpu"
    name = str(getattr(getattr(host_config, "engine", None), "device", "cuda") or "cuda").strip().lower()
    if not (DEVICE_PATTERN.match(name) and name.startswith("cuda")):
        name = "cuda"
    return str(resolve_device(name, key="host config engine.device"))


class ModelCache:
    """Thread-safe ``species -> CachedModel`` through the host loader (see the module docstring)."""

    def __init__(self, loader: HostLoader) -> None:
        self._loader = loader
        self._guard = threading.Lock()
        self._by_key: dict[tuple[str, str], CachedModel] = {}
        self._species_key: dict[str, tuple[str, str]] = {}

    def get(self, species: str) -> CachedModel:
        with self._guard:
            key = self._species_key.get(species)
            if key is not None:
                return self._by_key[key]
        # load outside the guard: the host loader may download; the species map is filled after
        try:
            model, host_config, urls = self._loader(species)
        except Exception as exc:
            raise PairXError(
                f"the host model loader failed for species {species!r}: {type(exc).__name__}: {exc}; "
                "check the host's model_config.json / model_bin_config.json"
            ) from exc
        if not isinstance(model, torch.nn.Module):
            raise UnsupportedModelError(
                f"the host loader returned {type(model).__name__} for species {species!r}; expected a torch.nn.Module"
            )
        model_url, config_url = (str(u) for u in urls)
        device = host_device(host_config)
        key = (model_url, device)
        with self._guard:
            cached = self._by_key.get(key)
            if cached is None:
                model = model.to(device)
                cached = CachedModel(model, host_config, model_url, config_url, device)
                self._by_key[key] = cached
            self._species_key[species] = key
            return cached

    def __len__(self) -> int:
        with self._guard:
            return len(self._by_key)

    def clear(self) -> None:
        with self._guard:
            self._by_key.clear()
            self._species_key.clear()
