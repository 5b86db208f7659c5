"""The FastAPI wiring: ``POST /explain/``, ``GET /artifacts/{artifact_id}``, ``GET /health``, and the
review of a stored run: ``GET /store/review/{run_name}.html`` (the page), ``GET /store/{path}`` (the files
it links to) and ``POST /runs/{run_name}/decisions`` (where the page saves each curator decision).

Where ml-service has a rule (status 400) the reply body is exactly its ``{"detail": <text>}`` and our
hint (which field, what to do) is in the ``X-PairX-Hint`` header. Statuses of our own carry
``{"detail": ..., "hint": ...}`` (and the header): 413 (body too large), 403 (URI policy), 422 (a body
that is not the request's shape), 500 (an internal failure).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
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
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")


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

    async def read_body(request: Request, too_large_hint: str) -> bytes | JSONResponse:
        """The bounded body, or the error reply for a body that is too large or declares a bad length."""
        try:
            return await bounded_body(request)
        except RequestTooLargeError as exc:
            return _error(413, str(exc), too_large_hint)
        except InvalidInputError as exc:
            return _error(400, str(exc), "send a valid Content-Length or none")

    @app.post("/explain/")
    @app.post("/explain", include_in_schema=False)
    async def explain(request: Request) -> JSONResponse:
        body = await read_body(request, "send fewer or shorter URIs, or raise max_body_bytes in the service config")
        if isinstance(body, JSONResponse):
            return body
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

    store_root = service.store.root

    @app.get("/store/review/{run_name}.html")
    async def review_page(run_name: str) -> Response:
        try:
            html = await run_in_threadpool(_review_html, store_root, run_name)
        except InvalidInputError as exc:
            return _error(404, str(exc), "open the review of a run this service stored (see runs/ in the store)")
        except ArtifactError as exc:
            return _error(500, str(exc), "see the service log")
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.get("/store/{path:path}")
    async def store_file(path: str) -> Response:
        target = _store_file(store_root, path)
        if target is None:
            return _error(404, f"no stored file {path[:200]!r}", "follow the links of a review page")
        return FileResponse(target)

    @app.post("/runs/{run_name}/decisions")
    async def decisions(run_name: str, request: Request) -> JSONResponse:
        body = await read_body(request, "post fewer decisions at a time, or raise max_body_bytes")
        if isinstance(body, JSONResponse):
            return body
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return _error(400, "posted decisions are not UTF-8 text", "send JSON Lines, one decision per line")
        try:
            files = await run_in_threadpool(_store_run_decisions, store_root, run_name, text)
        except InvalidInputError as exc:
            return _error(422, str(exc), "send decision lines of this run (docs/schema/decision.schema.json)")
        except ArtifactError as exc:
            return _error(500, str(exc), "see the service log")
        return JSONResponse({"stored": True, "files": [f.name for f in files]})

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


def _review_html(store_root: Path, run_name: str) -> str:
    """The review page of ``runs/<run_name>.jsonl``, served from ``/store/review/`` (so its relative links
    land on ``/store/...``), saving decisions to this run's decisions route."""
    from pairx_plugin.artifacts.review import read_manifest_entries, render_review_html

    manifest = _run_manifest(store_root, run_name)
    entries = read_manifest_entries(manifest)
    return render_review_html(
        entries,
        store_root,
        store_root / "review",
        f"PAIR-X review: {run_name}",
        run_name=run_name,
        decisions_url=f"/runs/{run_name}/decisions",
    )


def _run_manifest(store_root: Path, run_name: str) -> Path:
    if not _RUN_NAME.match(run_name):
        raise InvalidInputError(f"run name {run_name[:130]!r} is not a plain run name (letters, digits, '_', '.', '-')")
    manifest = store_root / "runs" / f"{run_name}.jsonl"
    if not manifest.is_file():
        raise InvalidInputError(f"run {run_name!r} has no manifest in this service's store")
    return manifest


def _store_run_decisions(store_root: Path, run_name: str, text: str) -> list[Path]:
    """Validate and append posted decision lines; every line must be about ``run_name`` (the URL's run)."""
    from pairx_plugin.decisions import parse_decisions, store_decisions

    _run_manifest(store_root, run_name)
    lines = text.splitlines()
    for decision in parse_decisions(lines, source="posted decisions"):
        if decision.run_name != run_name:
            raise InvalidInputError(
                f"posted decision names run {decision.run_name!r} but was posted to run {run_name!r}'s route"
            )
    return store_decisions(store_root / "runs", lines)


def _store_file(store_root: Path, path: str) -> Path | None:
    """A regular file inside the store for ``path``, or None (missing, outside the store, a symlink out)."""
    root = store_root.resolve()
    try:
        target = (root / path).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if not target.is_relative_to(root) or not target.is_file():
        return None
    return target


__all__ = ["HINT_HEADER", "RequestTooLargeError", "create_app"]
