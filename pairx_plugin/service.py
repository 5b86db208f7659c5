"""A Wildbook-compatible PAIR-X explain service (FastAPI): ``create_app(config)``.

Newer Wildbook asks an external ML service for PAIR-X pictures with ``POST <endpoint>/explain/``
and reads ``{"images": [<base64 PNG>, ...]}`` (see docs/service.md). This app answers that request,
and serves our JSON artifacts with ``GET /artifacts/{artifact_id}``.

Request handling, in order:

1. the body is bounded (``max_body_bytes``: 413 before parsing), then validated (422: unknown
   algorithm or visualization type, bad k values, pair layout, more than ``max_pairs`` pairs);
2. ``model_id`` must name a configured model (422 otherwise; ``"default"`` is the built-in model);
3. every image URI must pass the URI policy before any file is touched (403): a local path or
   ``file://`` URI resolved (symlinks included) to a file inside one of ``image_roots``; ``http(s)``
   only when ``allow_http`` is on *and* the host is listed in ``http_allowed_hosts``;
4. each distinct image (URI, plus box and angle when ``crop_bbox``) is read and preprocessed once;
   the pairs go through the core hook (:func:`pairx_plugin.hook.explain_matches`), which forwards
   each query image once with all of its candidates; the model runs under its own lock;
5. a pair that fails (a missing or unreadable file, an engine error) gets ``null`` in ``images`` and
   its error in ``errors`` at the same index; the other pairs are unaffected.
"""
from __future__ import annotations

import base64
import math
import os
import tempfile
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .config import PairXConfig, format_validation_error
from .errors import (
    ArtifactError,
    ConfigError,
    InvalidInputError,
    LayerNotFoundError,
    PairXError,
    UnsupportedModelError,
)
from .images import DEFAULT_MAX_PIXELS, LoadedImage, crop_box, load_image, prepare_image
from .records import MatchRecord

#: Wildbook's visualization types -> the renderer's panel
VISUALIZATION_PANELS = {"lines_and_colors": "composite", "only_lines": "only_lines", "only_colors": "only_colors"}
WILDBOOK_MAX_PAIRS = 16


class UriNotAllowedError(InvalidInputError):
    """An image URI breaks the service's URI policy (outside the roots, scheme or host not allowed)."""


class RequestTooLargeError(InvalidInputError):
    """The request body is larger than ``max_body_bytes``."""


# ------------------------------------------------------------------------------ configuration
class ModelEntry(BaseModel):
    """One model the service can use, named by ``model_id`` in requests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec: str = Field("builtin", description="A model spec (see pairx_plugin.models.load_model_spec).")
    weights: str | None = Field(None, description="Optional state-dict file for the spec.")
    layer_key: str | None = Field(
        None, description="Layer to explain for this model; when set it replaces the request's layer_key "
        "(Wildbook sends 'backbone.blocks.3', a MiewID name)."
    )


class ServiceConfig(BaseModel):
    """Settings of the explain service (YAML/JSON file given to ``pairx-plugin serve --config``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_roots: list[str] = Field(default_factory=list, description="Directories local image URIs may point into.")
    allow_http: bool = Field(False, description="Allow http(s) image URIs at all (off by default).")
    http_allowed_hosts: list[str] = Field(
        default_factory=list, description="Host names http(s) URIs may use when allow_http is on; no other host."
    )
    http_timeout_s: float = Field(10.0, gt=0)
    max_image_bytes: int = Field(20_000_000, ge=1, description="Largest image download, in bytes.")
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=64)
    max_pairs: int = Field(WILDBOOK_MAX_PAIRS, ge=1, le=256)
    max_body_bytes: int = Field(256_000, ge=1024, description="Largest request body, in bytes (413 above).")
    models: dict[str, ModelEntry] = Field(default_factory=lambda: {"default": ModelEntry()})
    output_dir: str | None = Field(None, description="Artifact store root; a temporary directory when unset.")
    pairx: PairXConfig = Field(default_factory=PairXConfig, description="Defaults: k_lines, k_colors, mode, backend.")

    @field_validator("image_roots")
    @classmethod
    def _roots_are_directories(cls, roots: list[str]) -> list[str]:
        out = []
        for root in roots:
            path = Path(root).expanduser()
            if not path.is_dir():
                raise ValueError(f"image root {root!r} is not a directory; create it or fix the path")
            out.append(str(path.resolve()))
        return out

    @field_validator("http_allowed_hosts")
    @classmethod
    def _lower_hosts(cls, hosts: list[str]) -> list[str]:
        return [h.strip().lower() for h in hosts if h.strip()]

    @model_validator(mode="after")
    def _has_default_model(self) -> "ServiceConfig":
        if not self.models:
            raise ValueError("models must name at least one model, e.g. {'default': {'spec': 'builtin'}}")
        return self

    @classmethod
    def load(cls, source: Any = None, **overrides: Any) -> "ServiceConfig":
        """From a dict, a YAML/JSON file path or None, with keyword overrides; ConfigError names the key."""
        data: dict[str, Any] = {}
        if isinstance(source, (str, os.PathLike)):
            import yaml

            path = Path(source)
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except OSError as exc:
                raise ConfigError(f"service config {str(path)!r} cannot be read: {exc.strerror or exc}") from None
            except yaml.YAMLError as exc:
                raise ConfigError(f"service config {str(path)!r} is not valid YAML/JSON: {exc}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"service config {str(path)!r} must be a mapping of settings")
        elif isinstance(source, dict):
            data = dict(source)
        elif source is not None:
            raise ConfigError(f"cannot read a service config from {type(source).__name__}; pass a dict or a file path")
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, section="service")) from None


# ------------------------------------------------------------------------------ the request
Numbers = list[float]


class ExplainRequest(BaseModel):
    """Wildbook's ``/explain/`` body. Unknown fields are ignored (Wildbook may add some)."""

    model_config = ConfigDict(extra="ignore")

    algorithm: Literal["pairx"]
    visualization_type: Literal["lines_and_colors", "only_lines", "only_colors"] = "lines_and_colors"
    k_colors: int = Field(10, ge=1, le=100)
    k_lines: int | None = Field(None, ge=1, le=500)
    layer_key: str | None = None
    model_id: str = "default"
    crop_bbox: bool = False
    image1_uris: list[str] = Field(min_length=1)
    image2_uris: list[str] = Field(min_length=1)
    theta1: float | list[float | None] | None = None
    theta2: float | list[float | None] | None = None
    bb1: Numbers | list[Numbers | None] | None = None
    bb2: Numbers | list[Numbers | None] | None = None
    return_artifacts: bool = Field(False, description="Also return the JSON artifact ids (ours, not Wildbook's).")

    @field_validator("k_colors", "k_lines", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be an integer, not a boolean")
        return value

    @model_validator(mode="after")
    def _pair_layout(self) -> "ExplainRequest":
        n1, n2 = len(self.image1_uris), len(self.image2_uris)
        if n1 != 1 and n1 != n2:
            raise ValueError(
                f"image1_uris has {n1} and image2_uris {n2} entries; send one query image (1-to-N) or "
                "equally long lists (N-to-N)"
            )
        for name, value, count in (("theta1", self.theta1, n1), ("theta2", self.theta2, n2),
                                   ("bb1", self.bb1, n1), ("bb2", self.bb2, n2)):
            _per_image(name, value, count)  # raises ValueError on a length mismatch
        return self

    def pairs(self) -> list[tuple[int, int]]:
        """(index into image1_uris, index into image2_uris) per pair, in response order."""
        if len(self.image1_uris) == 1:
            return [(0, j) for j in range(len(self.image2_uris))]
        return [(i, i) for i in range(len(self.image1_uris))]


def _is_box(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(isinstance(v, (int, float)) for v in value)


def _per_image(name: str, value: Any, count: int) -> list[Any]:
    """One entry per image: a scalar/single box applies to all; a list must have ``count`` entries."""
    if value is None:
        return [None] * count
    if name.startswith("theta"):
        if not isinstance(value, list):
            return [value] * count
    elif _is_box(value):
        return [value] * count
    if len(value) != count:
        raise ValueError(f"{name} has {len(value)} entries for {count} images; send one per image")
    if name.startswith("bb"):
        for box in value:
            if box is not None and not _is_box(box):
                raise ValueError(f"{name}: every box must be [x, y, w, h], got {box!r}")
    return list(value)


# ------------------------------------------------------------------------------ URI policy
@dataclass(frozen=True)
class ImageLocation:
    uri: str
    path: Path | None = None  # a local file inside a root
    url: str | None = None  # an allowed http(s) URL


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def resolve_uri(uri: str, config: ServiceConfig) -> ImageLocation:
    """Apply the URI policy; :class:`UriNotAllowedError` says which rule the URI breaks."""
    if not isinstance(uri, str) or not uri.strip() or "\x00" in uri:
        raise UriNotAllowedError(f"image URI {uri!r} is empty or contains a NUL byte; send a path or URL")
    parsed = urllib.parse.urlsplit(uri.strip())
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        host = (parsed.hostname or "").lower()
        if not config.allow_http:
            raise UriNotAllowedError(
                f"image URI {uri!r}: http(s) images are disabled; set allow_http and http_allowed_hosts in the "
                "service config, or send a path under an image root"
            )
        if host not in config.http_allowed_hosts:
            raise UriNotAllowedError(
                f"image URI {uri!r}: host {host!r} is not in http_allowed_hosts {config.http_allowed_hosts}"
            )
        if parsed.username or parsed.password:
            raise UriNotAllowedError(f"image URI {uri!r}: credentials in URLs are not accepted")
        return ImageLocation(uri=uri, url=uri.strip())
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise UriNotAllowedError(f"image URI {uri!r}: file URIs must not name a host")
        raw = urllib.parse.unquote(parsed.path)
    elif scheme == "":
        raw = uri.strip()
    else:
        raise UriNotAllowedError(f"image URI {uri!r}: scheme {scheme!r} is not allowed; send a path, file:// or http(s)")
    if not config.image_roots:
        raise UriNotAllowedError(
            f"image URI {uri!r}: no image roots are configured; start the service with --image-root DIR"
        )
    roots = [Path(r) for r in config.image_roots]
    candidates = [Path(raw)] if os.path.isabs(raw) else [root / raw for root in roots]
    for candidate in candidates:
        resolved = candidate.resolve(strict=False)  # follows symlinks, removes '..'
        if any(_inside(resolved, root) for root in roots):
            return ImageLocation(uri=uri, path=resolved)
    raise UriNotAllowedError(
        f"image URI {uri!r} resolves outside the configured image roots; send a path inside one of them"
    )


def _fetch_http(url: str, config: ServiceConfig) -> bytes:
    opener = urllib.request.build_opener(_NoRedirect)  # a redirect could leave the allowed hosts
    try:
        with opener.open(url, timeout=config.http_timeout_s) as response:
            data = response.read(config.max_image_bytes + 1)
    except OSError as exc:
        raise InvalidInputError(f"image URL {url!r} could not be fetched: {exc}") from None
    if len(data) > config.max_image_bytes:
        raise InvalidInputError(f"image URL {url!r} is larger than max_image_bytes={config.max_image_bytes}")
    return data


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 - stdlib hook
        raise InvalidInputError(f"image URL {req.full_url!r} redirects to {newurl!r}; redirects are not followed")


# ------------------------------------------------------------------------------ images
def crop_rotated(rgb: np.ndarray, bbox: list[float] | None, theta: float | None) -> np.ndarray:
    """The ``(x, y, w, h)`` box with its rotation ``theta`` (radians, about the box centre) removed.

    Without a box the whole image; with |theta| below 1e-6 a plain crop; otherwise an affine warp
    onto a white canvas of the box's size (pixels outside the image are white).
    """
    if bbox is None:
        return rgb
    theta = float(theta or 0.0)
    if not math.isfinite(theta):
        raise InvalidInputError(f"theta {theta!r} must be a finite angle in radians")
    if abs(theta) < 1e-6:
        return crop_box(rgb, bbox)
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 1 or h < 1:
        raise InvalidInputError(f"bbox {bbox!r} must have finite values and a size of at least 1x1 px")
    # centres in pixel-index coordinates (cv2 puts pixel i's centre at i, not i + 0.5)
    cx, cy = x + w / 2.0 - 0.5, y + h / 2.0 - 0.5
    ox, oy = w / 2.0 - 0.5, h / 2.0 - 0.5
    c, s = math.cos(-theta), math.sin(-theta)
    # warpAffine takes the forward map image -> output: rotate by -theta about the box centre, then
    # move the box centre to the output centre
    matrix = np.array([[c, -s, ox - (c * cx - s * cy)], [s, c, oy - (s * cx + c * cy)]])
    return cv2.warpAffine(rgb, matrix, (int(round(w)), int(round(h))), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255))


class _PreparedImages:
    """``ImageSource`` over the request's distinct images (a failure is raised when loaded)."""

    def __init__(self) -> None:
        self.items: dict[str, LoadedImage | Exception] = {}

    def load(self, image_id: str) -> LoadedImage:
        item = self.items[image_id]
        if isinstance(item, Exception):
            raise item
        return item


def _as_client_error(exc: Exception, location: ImageLocation) -> Exception:
    """The error with the server-side path replaced by the URI the client sent (no path leaks)."""
    if location.path is None or str(location.path) not in str(exc):
        return exc
    message = str(exc).replace(str(location.path), location.uri)
    error_type = type(exc) if isinstance(exc, PairXError) else InvalidInputError
    try:
        return error_type(message)
    except TypeError:  # an exception type with another constructor: keep the message, our type
        return InvalidInputError(message)


# ------------------------------------------------------------------------------ the service
@dataclass
class _LoadedModel:
    bundle: Any
    layer_key: str | None
    lock: threading.Lock


class ExplainService:
    """The work behind the HTTP layer (usable without HTTP, e.g. from tests or a job queue)."""

    def __init__(self, config: ServiceConfig) -> None:
        from .artifacts.store import ArtifactStore

        self.config = config
        root = config.output_dir or tempfile.mkdtemp(prefix="pairx-service-")
        self.store = ArtifactStore(root)
        self._models: dict[str, _LoadedModel] = {}
        self._guard = threading.Lock()

    def model(self, model_id: str) -> _LoadedModel:
        entry = self.config.models.get(model_id)
        if entry is None:
            raise InvalidInputError(
                f"model_id {model_id!r} is not configured; configured: {sorted(self.config.models)}"
            )
        with self._guard:
            loaded = self._models.get(model_id)
            if loaded is None:
                from .models import load_model_spec

                bundle = load_model_spec(entry.spec, entry.weights)
                loaded = _LoadedModel(bundle, entry.layer_key, threading.Lock())
                self._models[model_id] = loaded
            return loaded

    def _read_rgb(self, location: ImageLocation) -> np.ndarray:
        if location.path is not None:
            return load_image(location.path, max_pixels=self.config.max_image_pixels)
        data = _fetch_http(location.url or "", self.config)
        with tempfile.NamedTemporaryFile(suffix=".img") as handle:
            handle.write(data)
            handle.flush()
            return load_image(handle.name, max_pixels=self.config.max_image_pixels)

    def explain(self, request: ExplainRequest) -> dict[str, Any]:
        from .hook import explain_matches

        pairs = request.pairs()
        if len(pairs) > self.config.max_pairs:
            raise InvalidInputError(
                f"{len(pairs)} pairs requested; this service explains at most {self.config.max_pairs} per request"
            )
        loaded_model = self.model(request.model_id)
        layer = loaded_model.layer_key or request.layer_key
        # the URI policy for every image first: nothing is read if any URI is refused
        sides = {
            1: [resolve_uri(u, self.config) for u in request.image1_uris],
            2: [resolve_uri(u, self.config) for u in request.image2_uris],
        }
        boxes = {1: _per_image("bb1", request.bb1, len(sides[1])), 2: _per_image("bb2", request.bb2, len(sides[2]))}
        thetas = {1: _per_image("theta1", request.theta1, len(sides[1])),
                  2: _per_image("theta2", request.theta2, len(sides[2]))}
        bundle = loaded_model.bundle
        source = _PreparedImages()
        ids: dict[int, list[str]] = {1: [], 2: []}
        key_to_id: dict[tuple, str] = {}
        for side in (1, 2):
            for index, location in enumerate(sides[side]):
                box = boxes[side][index] if request.crop_bbox else None
                theta = thetas[side][index] if request.crop_bbox else None
                key = (location.uri, tuple(box) if box else None, theta)
                if key not in key_to_id:  # each distinct image is read and preprocessed once
                    image_id = f"image{len(key_to_id)}"
                    key_to_id[key] = image_id
                    try:
                        crop = crop_rotated(self._read_rgb(location), box, theta)
                        source.items[image_id] = prepare_image(crop, bundle.input_size, bundle.mean, bundle.std)
                    except Exception as exc:  # noqa: BLE001 - costs only the pairs using this image
                        source.items[image_id] = _as_client_error(exc, location)
                ids[side].append(key_to_id[key])

        unique_pairs: dict[tuple[str, str], int] = {}
        records: list[MatchRecord] = []
        per_query_rank: dict[str, int] = {}
        for i, j in pairs:
            pair = (ids[1][i], ids[2][j])
            if pair in unique_pairs:
                continue
            rank = per_query_rank.get(pair[0], 0)
            per_query_rank[pair[0]] = rank + 1
            unique_pairs[pair] = len(records)
            records.append(MatchRecord(query_id=pair[0], candidate_id=pair[1], rank=rank, score=float("nan")))
        panel = VISUALIZATION_PANELS[request.visualization_type]
        config = PairXConfig(**{
            **self.config.pairx.model_dump(),
            "layer_keys": [layer] if layer else "auto",
            "k_colors": request.k_colors,
            "k_lines": request.k_lines or self.config.pairx.k_lines,
            "top_k": max(per_query_rank.values()),
            "render": [panel],
        })
        with loaded_model.lock:
            explained = explain_matches(records=records, images=source, model=bundle.model, config=config,
                                        store=self.store, progress=False)
        images: list[str | None] = []
        errors: list[dict[str, Any] | None] = []
        artifact_ids: list[str | None] = []
        for i, j in pairs:
            record = explained[unique_pairs[(ids[1][i], ids[2][j])]]
            if record.explanation is None:
                info = record.explanation_error
                images.append(None)
                artifact_ids.append(None)
                errors.append({"type": info.type if info else "PairXError",
                               "message": info.message if info else "not explained",
                               "stage": info.stage if info else None})
                continue
            try:
                png = (self.store.root / record.explanation.images[panel]).read_bytes()
            except (OSError, KeyError) as exc:
                images.append(None)
                artifact_ids.append(None)
                errors.append({"type": "ArtifactError", "message": f"stored picture unreadable: {exc}",
                               "stage": "store"})
                continue
            images.append(base64.b64encode(png).decode("ascii"))
            artifact_ids.append(record.explanation.artifact_id)
            errors.append(None)
        out: dict[str, Any] = {"images": images, "errors": errors}
        if request.return_artifacts:
            out["artifact_ids"] = artifact_ids
        return out

    def artifact(self, artifact_id: str) -> dict[str, Any]:
        if not isinstance(artifact_id, str) or len(artifact_id) != 64 or not all(
            c in "0123456789abcdef" for c in artifact_id
        ):
            raise InvalidInputError(f"artifact id {artifact_id!r} is not a 64-character lowercase hex sha256")
        return self.store.load(artifact_id).model_dump(mode="json")


def _error_body(exc: Exception) -> dict[str, Any]:
    return {"detail": str(exc), "type": type(exc).__name__}


def create_app(config: ServiceConfig | dict | None = None):
    """The FastAPI app: ``POST /explain/``, ``GET /artifacts/{artifact_id}``, ``GET /health``."""
    if not isinstance(config, ServiceConfig):
        config = ServiceConfig.load(config)
    service = ExplainService(config)
    app = FastAPI(title="pairx-plugin explain service", version="1")
    app.state.service = service

    async def bounded_body(request: Request) -> bytes:
        limit = config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise InvalidInputError(f"Content-Length {declared!r} is not a number")
            if int(declared) > limit:
                raise RequestTooLargeError(f"request body of {declared} bytes exceeds max_body_bytes={limit}")
        chunks, size = [], 0
        async for chunk in request.stream():  # also bounds chunked bodies without a length
            size += len(chunk)
            if size > limit:
                raise RequestTooLargeError(f"request body exceeds max_body_bytes={limit}")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.post("/explain/")
    @app.post("/explain", include_in_schema=False)
    async def explain(request: Request):
        try:
            body = await bounded_body(request)
        except RequestTooLargeError as exc:
            return JSONResponse(_error_body(exc), status_code=413)
        except InvalidInputError as exc:
            return JSONResponse(_error_body(exc), status_code=400)
        try:
            parsed = ExplainRequest.model_validate_json(body)
        except ValidationError as exc:
            detail = format_validation_error(exc, section="")
            return JSONResponse({"detail": detail, "type": "InvalidInputError"}, status_code=422)
        try:
            result = await run_in_threadpool(service.explain, parsed)
        except UriNotAllowedError as exc:
            return JSONResponse(_error_body(exc), status_code=403)
        except (InvalidInputError, ConfigError, LayerNotFoundError, UnsupportedModelError) as exc:
            return JSONResponse(_error_body(exc), status_code=422)
        except PairXError as exc:
            return JSONResponse(_error_body(exc), status_code=500)
        return JSONResponse(result)

    @app.get("/artifacts/{artifact_id}")
    async def artifact(artifact_id: str):
        try:
            return JSONResponse(await run_in_threadpool(service.artifact, artifact_id))
        except InvalidInputError as exc:
            return JSONResponse(_error_body(exc), status_code=422)
        except ArtifactError as exc:
            return JSONResponse(_error_body(exc), status_code=404)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": sorted(config.models)}

    return app


__all__ = [
    "create_app", "ServiceConfig", "ModelEntry", "ExplainRequest", "ExplainService", "resolve_uri",
    "crop_rotated", "UriNotAllowedError", "RequestTooLargeError", "VISUALIZATION_PANELS",
]
