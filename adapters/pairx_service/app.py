"""The FastAPI wiring: ``POST /explain/``, ``GET /artifacts/{artifact_id}``, ``GET /health``.

Where ml-service has a rule (status 400) the reply body is exactly its ``{"detail": <text>}`` and our
hint (which field, what to do) is in the ``X-PairX-Hint`` header. Statuses of our own carry
``{"detail": ..., "hint": ...}`` (and the header): 413 (body too large), 403 (URI policy), 422 (a body
that is not the request's shape), 500 (an internal failure).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from pairx_plugin.config import format_validation_error
from pairx_plugin.errors import ArtifactError, ConfigError, InvalidInputError, PairXError

from .config import ServiceConfig
from .request import ExplainRequest, RequestRejected
from .service import ExplainService
from .uris import UriNotAllowedError


class RequestTooLargeError(InvalidInputError):
    """The request body is larger than ``max_body_bytes``."""


HINT_HEADER = "X-PairX-Hint"


def _header_text(text: str, limit: int = 500) -> str:
    """Headers are latin-1 and one line: keep printable ASCII, at most ``limit`` characters."""
    flat = " ".join(text.split())
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in flat)[:limit]


def _error(status: int, detail: str, hint: str) -> JSONResponse:
    return JSONResponse({"detail": detail, "hint": hint}, status_code=status, headers={HINT_HEADER: _header_text(hint)})


def create_app(config: ServiceConfig | dict[str, Any] | None = None) -> FastAPI:
    """The FastAPI app for ``config`` (a :class:`ServiceConfig`, a dict, a YAML/JSON path or None)."""
    if not isinstance(config, ServiceConfig):
        config = ServiceConfig.load(config)
    service = ExplainService(config)
    app = FastAPI(title="pairx-plugin explain service", version="2")
    app.state.service = service
    limit = config.max_body_bytes

    async def bounded_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise InvalidInputError(f"Content-Length {declared[:40]!r} is not a number")
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
    async def explain(request: Request) -> JSONResponse:
        try:
            body = await bounded_body(request)
        except RequestTooLargeError as exc:
            return _error(413, str(exc), "send fewer or shorter URIs, or raise max_body_bytes in the service config")
        except InvalidInputError as exc:
            return _error(400, str(exc), "send a valid Content-Length or none")
        try:
            parsed = ExplainRequest.model_validate_json(body)
        except ValidationError as exc:
            return _error(
                422, format_validation_error(exc, section=""), "send ml-service's /explain/ body (see docs/service.md)"
            )
        try:
            result = await run_in_threadpool(service.explain, parsed)
        except RequestRejected as exc:
            return JSONResponse(exc.body(), status_code=exc.status, headers={HINT_HEADER: _header_text(exc.hint)})
        except UriNotAllowedError as exc:
            return _error(403, str(exc), "send a path inside an image root (or an allowed http(s) host)")
        except (InvalidInputError, ConfigError) as exc:
            return _error(400, str(exc), "fix the request or the service config")
        except PairXError as exc:
            return _error(500, f"{type(exc).__name__}: {exc}", "see the service log")
        return JSONResponse(result)

    @app.get("/artifacts/{artifact_id}")
    async def artifact(artifact_id: str) -> JSONResponse:
        try:
            return JSONResponse(await run_in_threadpool(service.artifact, artifact_id))
        except InvalidInputError as exc:
            return _error(422, str(exc), "send an artifact id from an /explain/ reply (return_artifacts: true)")
        except ArtifactError as exc:
            return _error(404, str(exc), "explain the pair first; ids are returned with return_artifacts: true")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "healthy",
            "service": "running",
            "device": config.device,
            "models": {
                model_id: {"spec": entry.spec, "loaded": service.models.is_loaded(model_id)}
                for model_id, entry in sorted(config.models.items())
            },
        }

    return app


__all__ = ["HINT_HEADER", "RequestTooLargeError", "create_app"]
