"""The service's models: each configured model id loaded once, on first use, onto the configured device.

Explanations of one model are serialised by the engine's per-model lock
(:func:`pairx_plugin.engine.locks.model_lock`); different models run in parallel.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from pairx_plugin.config import resolve_device
from pairx_plugin.models import ModelBundle, load_model_spec

from .config import MLSERVICE_LAYER_KEY, ModelEntry, ServiceConfig


@dataclass(frozen=True)
class LoadedModel:
    model_id: str
    bundle: ModelBundle
    default_layer: str

    def has_layer(self, layer_key: str) -> bool:
        return layer_key in dict(self.bundle.model.named_modules())


class ModelRegistry:
    """Configured model ids -> loaded models (``model_id`` matched case-insensitively)."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self._loaded: dict[str, LoadedModel] = {}
        self._loading = threading.Lock()

    @property
    def configured(self) -> list[str]:
        return sorted(self.config.models)

    def is_loaded(self, model_id: str) -> bool:
        return model_id.lower() in self._loaded

    def get(self, model_id: str) -> LoadedModel:
        """The loaded model; KeyError for an id that is not configured (the request rules refuse those)."""
        key = model_id.lower()
        entry: ModelEntry = self.config.models[key]
        with self._loading:
            loaded = self._loaded.get(key)
            if loaded is None:
                device = resolve_device(self.config.device, key="service.device")  # before the slow load
                bundle = load_model_spec(entry.spec, entry.weights, trust_remote_code=entry.trust_remote_code)
                if entry.input_size is not None:
                    bundle = replace(bundle, input_size=entry.input_size)
                bundle.model.to(device).eval()
                loaded = LoadedModel(key, bundle, entry.layer_key or MLSERVICE_LAYER_KEY)
                self._loaded[key] = loaded
            return loaded


__all__ = ["LoadedModel", "ModelRegistry"]
