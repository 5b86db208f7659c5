"""The URI policy: which image URIs the service may read, and error texts that never show server paths.

* A plain path or ``file://`` URI (no host) is resolved (``..`` removed, symlinks followed) and must
  lie inside one of ``image_roots``; a relative path is looked up under each root.
* ``http(s)`` only when ``allow_http`` is on *and* the host is in ``http_allowed_hosts``; no
  credentials, no redirects, at most ``max_image_bytes``.
* Any other scheme is refused. Refusals raise :class:`UriNotAllowedError` before any file is read.
"""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pairx_plugin.errors import InvalidInputError

from .config import ServiceConfig

URI_ECHO_LIMIT = 200  # characters of a client's URI repeated in an error message


class UriNotAllowedError(InvalidInputError):
    """An image URI breaks the service's URI policy (outside the roots, scheme or host not allowed)."""


@dataclass(frozen=True)
class ImageLocation:
    uri: str
    path: Path | None = None  # a local file inside a root
    url: str | None = None  # an allowed http(s) URL


def short_uri(uri: str, limit: int = URI_ECHO_LIMIT) -> str:
    """The URI as echoed in messages: at most ``limit`` characters (the middle elided)."""
    text = str(uri)
    if len(text) <= limit:
        return text
    keep = (limit - 3) // 2
    return f"{text[:keep]}...{text[-keep:]}"


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def resolve_uri(uri: str, config: ServiceConfig) -> ImageLocation:
    """Apply the URI policy; :class:`UriNotAllowedError` says which rule the URI breaks."""
    shown = repr(short_uri(uri)) if isinstance(uri, str) else repr(uri)
    if not isinstance(uri, str) or not uri.strip() or "\x00" in uri:
        raise UriNotAllowedError(f"image URI {shown} is empty or contains a NUL byte; send a path or URL")
    parsed = urllib.parse.urlsplit(uri.strip())
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        host = (parsed.hostname or "").lower()
        if not config.allow_http:
            raise UriNotAllowedError(
                f"image URI {shown}: http(s) images are disabled; set allow_http and http_allowed_hosts in the "
                "service config, or send a path under an image root"
            )
        if host not in config.http_allowed_hosts:
            raise UriNotAllowedError(
                f"image URI {shown}: host {host[:80]!r} is not in http_allowed_hosts {config.http_allowed_hosts}"
            )
        if parsed.username or parsed.password:
            raise UriNotAllowedError(f"image URI {shown}: credentials in URLs are not accepted")
        return ImageLocation(uri=uri, url=uri.strip())
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise UriNotAllowedError(f"image URI {shown}: file URIs must not name a host")
        raw = urllib.parse.unquote(parsed.path)
    elif scheme == "":
        raw = uri.strip()
    else:
        raise UriNotAllowedError(
            f"image URI {shown}: scheme {scheme[:20]!r} is not allowed; send a path, file:// or http(s)"
        )
    if not config.image_roots:
        raise UriNotAllowedError(
            f"image URI {shown}: no image roots are configured; start the service with --image-root DIR"
        )
    roots = [Path(r) for r in config.image_roots]
    candidates = [Path(raw)] if os.path.isabs(raw) else [root / raw for root in roots]
    for candidate in candidates:
        try:
            resolved = candidate.resolve(strict=False)  # follows symlinks, removes '..'
        except (OSError, RuntimeError, ValueError):  # a name too long, a symlink loop
            continue
        if any(_inside(resolved, root) for root in roots):
            return ImageLocation(uri=uri, path=resolved)
    raise UriNotAllowedError(
        f"image URI {shown} resolves outside the configured image roots; send a path inside one of them"
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        raise InvalidInputError(
            f"image URL {short_uri(req.full_url)!r} redirects to {short_uri(newurl)!r}; redirects are not followed"
        )


def fetch_http(url: str, config: ServiceConfig) -> bytes:
    """The bytes at an allowed URL (no redirects, at most ``max_image_bytes``)."""
    opener = urllib.request.build_opener(_NoRedirect)  # a redirect could leave the allowed hosts
    try:
        with opener.open(url, timeout=config.http_timeout_s) as response:
            data: bytes = response.read(config.max_image_bytes + 1)
    except OSError as exc:
        raise InvalidInputError(f"image URL {short_uri(url)!r} could not be fetched: {exc}") from None
    if len(data) > config.max_image_bytes:
        raise InvalidInputError(f"image URL {short_uri(url)!r} is larger than max_image_bytes={config.max_image_bytes}")
    return data


def client_message(exc: Exception, location: ImageLocation, config: ServiceConfig) -> str:
    """``exc``'s text for the client: the server-side path replaced by the client's URI, never shown.

    Messages of :func:`pairx_plugin.images.load_image` start ``image '<path>': <problem>`` (a long
    path shortened in the middle); the problem is kept, the path becomes the (shortened) URI. If any
    trace of a root or of the resolved path is still there, only the exception type is kept.
    """
    message = str(exc)
    shown = short_uri(location.uri)
    if location.path is not None:
        text = str(location.path)
        message = message.replace(text, shown)
        prefix = "image '"
        if message.startswith(prefix) and "': " in message:
            message = f"image {shown!r}: {message.split(chr(39) + ': ', 1)[1]}"
    traces = [r for r in config.image_roots if r and r != os.sep]
    if location.path is not None:
        traces += [str(location.path)[:70], str(location.path)[-70:]]
    residue = message.replace(shown, "")  # the client's own URI may share a tail with the path
    if any(trace in residue for trace in traces if len(trace) > 1):
        message = f"image {shown!r} cannot be read ({type(exc).__name__})"
    return message


__all__ = ["ImageLocation", "UriNotAllowedError", "client_message", "fetch_http", "resolve_uri", "short_uri"]
