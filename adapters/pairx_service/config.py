"""Settings of the explain service (the YAML/JSON file given to ``pairx-plugin serve --config``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pairx_plugin.config import DEVICE_PATTERN, PairXConfig, format_validation_error, load_yaml
from pairx_plugin.errors import ConfigError
from pairx_plugin.images import DEFAULT_MAX_PIXELS

#: ml-service refuses N-to-N batches above this size ("Batch exceeded max size of 16").
MLSERVICE_MAX_PAIRS = 16
#: The model ids ml-service's ``/explain/`` accepts (compared case-insensitively).
MLSERVICE_MODEL_IDS = ("miewid-msv3", "miewid-msv4.1")
#: ml-service's default ``layer_key`` (a MiewID layer).
MLSERVICE_LAYER_KEY = "backbone.blocks.3"


class ModelEntry(BaseModel):
    """One model the service can use, named by ``model_id`` in requests (``models.<id>`` in the config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec: str = Field("builtin", description="A model spec (see pairx_plugin.models.load_model_spec).")
    weights: str | None = Field(None, description="Optional state-dict file for the spec.")
    layer_key: str | None = Field(
        None,
        description="Layer explained when a request sends no layer_key (default: ml-service's "
        "'backbone.blocks.3'). A layer_key the request sends is always used, and checked against the model.",
    )
    input_size: int | None = Field(None, ge=32, description="Square input size in pixels (default: the spec's).")
    trust_remote_code: bool = Field(
        False, description="Let a 'transformers:' model's own Python code run (MiewID's hub format needs it)."
    )


class ServiceConfig(BaseModel):
    """Settings of the explain service; every key optional, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_roots: list[str] = Field(default_factory=list, description="Directories local image URIs may point into.")
    allow_http: bool = Field(False, description="Allow http(s) image URIs at all (off by default).")
    http_allowed_hosts: list[str] = Field(
        default_factory=list, description="Host names http(s) URIs may use when allow_http is on; no other host."
    )
    http_timeout_s: float = Field(10.0, gt=0)
    max_image_bytes: int = Field(20_000_000, ge=1, description="Largest image download, in bytes.")
    max_image_pixels: int = Field(
        DEFAULT_MAX_PIXELS, ge=64, description="Largest decoded image and largest crop, in pixels."
    )
    max_pairs: int = Field(MLSERVICE_MAX_PAIRS, ge=1, le=256)
    max_body_bytes: int = Field(256_000, ge=1024, description="Largest request body, in bytes (413 above).")
    device: str = Field("auto", description="Where configured models run: auto (a GPU when there is one), cpu, cuda:N.")
    models: dict[str, ModelEntry] = Field(
        default_factory=dict,
        description="Model id -> model. ml-service's ids are 'miewid-msv3' and 'miewid-msv4.1'; ids are "
        "matched case-insensitively. 'default' may name the built-in model.",
    )
    output_dir: str | None = Field(None, description="Artifact store root; a temporary directory when unset.")
    pairx: PairXConfig = Field(default_factory=PairXConfig, description="Defaults: mode, backend, ...")

    @field_validator("image_roots")
    @classmethod
    def _roots_are_directories(cls, roots: list[str]) -> list[str]:
        out = []
        for root in roots:
            path = Path(root).expanduser()
            if not path.is_dir():
                raise ValueError(f"image root {root[:200]!r} is not a directory; create it or fix the path")
            out.append(str(path.resolve()))
        return out

    @field_validator("http_allowed_hosts")
    @classmethod
    def _lower_hosts(cls, hosts: list[str]) -> list[str]:
        return [h.strip().lower() for h in hosts if h.strip()]

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        text = value.strip().lower()
        if not DEVICE_PATTERN.match(text):
            raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {value[:60]!r}")
        return text

    @field_validator("models")
    @classmethod
    def _lower_model_ids(cls, models: dict[str, ModelEntry]) -> dict[str, ModelEntry]:
        lowered: dict[str, ModelEntry] = {}
        for key, entry in models.items():
            name = key.strip().lower()
            if not name or name in lowered:
                raise ValueError(f"model id {key!r} is empty or repeated (ids are case-insensitive)")
            lowered[name] = entry
        return lowered

    @classmethod
    def load(cls, source: Any = None, **overrides: Any) -> ServiceConfig:
        """From a dict, a YAML/JSON file path or None, with keyword overrides; ConfigError names the key."""
        data: dict[str, Any] = {}
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise ConfigError(f"service config {str(path)!r} cannot be read: {reason}") from None
            document = load_yaml(text, origin=str(path)) or {}  # the project's one bounded YAML reader
            if not isinstance(document, dict):
                raise ConfigError(f"service config {str(path)!r} must be a mapping of settings")
            data = document
        elif isinstance(source, dict):
            data = dict(source)
        elif source is not None:
            raise ConfigError(f"cannot read a service config from {type(source).__name__}; pass a dict or a file path")
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, section="service")) from None


__all__ = ["MLSERVICE_LAYER_KEY", "MLSERVICE_MAX_PAIRS", "MLSERVICE_MODEL_IDS", "ModelEntry", "ServiceConfig"]
