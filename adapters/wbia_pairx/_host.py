"""Finding WBIA (and MiewID) without requiring them: every import here is optional."""

from __future__ import annotations

import importlib
from types import SimpleNamespace
from typing import Any


def find_wbia() -> SimpleNamespace | None:
    """WBIA's registration modules, or None when WBIA is not importable."""
    try:
        importlib.import_module("wbia")
        controller_inject = importlib.import_module("wbia.control.controller_inject")
        dtool = importlib.import_module("wbia.dtool")
        constants = importlib.import_module("wbia.constants")
    except ImportError:
        return None
    return SimpleNamespace(
        controller_inject=controller_inject, dtool=dtool, constants=constants, param_info=_param_info(dtool)
    )


def _param_info(dtool: Any) -> Any:
    try:
        import utool  # WBIA's own dependency; ParamInfo lives there

        return utool.ParamInfo
    except ImportError:
        return dtool.ParamInfo


def find_miewid() -> SimpleNamespace | None:
    """MiewID's plugin module pieces (request class, config class, model loader), if installed."""
    try:
        plugin = importlib.import_module("wbia_miew_id._plugin")
    except ImportError:
        return None
    needed = ("MiewIdRequest", "MiewIdConfig", "read_config_and_load_model")
    if not all(hasattr(plugin, name) for name in needed):
        return None
    return SimpleNamespace(
        request_cls=plugin.MiewIdRequest, config_cls=plugin.MiewIdConfig, loader=plugin.read_config_and_load_model
    )
