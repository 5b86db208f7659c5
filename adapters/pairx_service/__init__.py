"""The PAIR-X explain service: a drop-in for WildMe ml-service's ``POST /explain/`` (FastAPI).

Modules, one job each:

* :mod:`.config`   - ``ServiceConfig``/``ModelEntry``: the settings file of ``pairx-plugin serve``;
* :mod:`.request`  - ``ExplainRequest``: ml-service's request body, its defaults, and its 400 rules;
* :mod:`.uris`     - the URI policy (image roots, http allow-list) and client-safe error texts;
* :mod:`.crops`    - box/angle crops, bounded by ``max_image_pixels`` before anything is allocated;
* :mod:`.registry` - the model cache (one load per configured model id, explained under its lock);
* :mod:`.service`  - ``ExplainService``: one request's work, without HTTP;
* :mod:`.app`      - ``create_app``: the FastAPI wiring (needs the ``[service]`` extra);
* :mod:`.commands` - ``pairx-plugin serve`` (registered through the ``pairx_plugin.commands`` entry point).

Names are imported on first use, so reading the configuration does not import FastAPI.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "create_app": "pairx_service.app",
    "ServiceConfig": "pairx_service.config",
    "ModelEntry": "pairx_service.config",
    "ExplainRequest": "pairx_service.request",
    "RequestRejected": "pairx_service.request",
    "ExplainService": "pairx_service.service",
    "resolve_uri": "pairx_service.uris",
    "UriNotAllowedError": "pairx_service.uris",
    "crop_rotated": "pairx_service.crops",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pairx_service' has no attribute {name!r}")


__all__ = list(_LAZY)
