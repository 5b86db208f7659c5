"""WBIA plugin entry: registers at import when WBIA is importable; plain functions otherwise.

With WBIA present, importing this module (add ``wbia_pairx._plugin`` to WBIA's
``AUTOLOAD_PLUGIN_MODNAMES`` or import it before the controller is built) registers:

- controller methods ``ibs.wbia_plugin_pairx_explain``, ``ibs.wbia_plugin_pairx_render`` and
  ``ibs.wbia_plugin_pairx_explanation`` (``make_ibs_register_decorator``);
- the pairwise depc table ``PairxExplanation`` (``register_preprocs['annot']``);
- the JSON API ``/api/plugin/pairx/explanation/`` and the image route ``/plugin/pairx/image/``;
- and, when MiewID's plugin is importable, the post-matching hook on ``MiewIdRequest``
  (:func:`attach`), with the ``xpx_*`` keys added to ``MiewIdConfig``.

Without WBIA the same functions are importable and take any controller-like ``ibs``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2

from pairx_plugin.errors import ConfigError

from . import _host
from .config import XpxConfig, host_config_class
from .depc_table import register_table
from .json_result import entry_json
from .models import HostLoader
from .request_hook import PairxAttachment, enable_pairx
from .runtime import WbiaPairx

log = logging.getLogger(__name__)

_RUNTIME: WbiaPairx | None = None


def configure(
    loader: HostLoader | None = None, store_root: str | Path | None = None, progress: bool = False
) -> WbiaPairx:
    """Set the host model loader and artifact root (default: MiewID's loader, ``<cachedir>/pairx``)."""
    global _RUNTIME
    if loader is None:
        miewid = _host.find_miewid()
        if miewid is None:
            raise ConfigError(
                "no model loader: pass loader=read_config_and_load_model "
                "(MiewID's plugin, wbia_miew_id._plugin, is not importable)"
            )
        loader = miewid.loader
    _RUNTIME = WbiaPairx(loader, store_root=store_root, progress=progress)
    return _RUNTIME


def get_runtime() -> WbiaPairx:
    return _RUNTIME if _RUNTIME is not None else configure()


def attach(request_cls: type, config_cls: type | None = None, param_info: Any = None) -> PairxAttachment:
    """Add the post-matching hook and the PAIR-X renderer to a host request class."""
    return enable_pairx(request_cls, get_runtime(), config_cls, param_info)


# ---------------------------------------------------------------------- controller methods
def wbia_plugin_pairx_explain(
    ibs: Any, qaid: int, daid_list: list[int], query_config_dict: dict[str, Any] | None = None
) -> list[dict[str, Any] | None]:
    """Explain ``qaid`` against each of ``daid_list`` now; one JSON entry per daid (error or ref)."""
    from .selection import Candidate

    xpx = XpxConfig.from_mapping(query_config_dict).validated()
    cands = [Candidate(int(qaid), int(d), rank, 0.0) for rank, d in enumerate(daid_list) if int(d) != int(qaid)]
    entries = get_runtime().explain_candidates(ibs, cands, xpx)
    return [entry_json(e) for e in entries]


def wbia_plugin_pairx_render(
    ibs: Any, qaid: int, daid: int, version: str = "heatmask", query_config_dict: dict | None = None
):
    """The PAIR-X picture of one pair and thumbnail version as HxWx3 uint8 BGR."""
    xpx = XpxConfig.from_mapping(query_config_dict).validated()
    return get_runtime().render(ibs, int(qaid), int(daid), version, xpx)


def wbia_plugin_pairx_explanation(
    ibs: Any, query_annot_uuid: Any, database_annot_uuid: Any, query_config_dict: dict | None = None
) -> dict | None:
    """The stored explanation (reference or error) of one pair, looked up by annotation UUIDs."""
    import uuid as uuid_mod

    def to_uuid(value: Any) -> Any:
        if isinstance(value, dict) and "__UUID__" in value:
            value = value["__UUID__"]
        try:
            return value if isinstance(value, uuid_mod.UUID) else uuid_mod.UUID(str(value))
        except ValueError:
            raise ConfigError(f"{value!r} is not an annotation UUID; pass the UUID text") from None

    qaid = ibs.get_annot_aids_from_uuid(to_uuid(query_annot_uuid))
    daid = ibs.get_annot_aids_from_uuid(to_uuid(database_annot_uuid))
    if qaid is None or daid is None:
        raise ConfigError(f"unknown annotation UUID: {query_annot_uuid if qaid is None else database_annot_uuid}")
    xpx = XpxConfig.from_mapping(query_config_dict).validated()
    return entry_json(get_runtime().lookup(ibs, qaid, daid, xpx))


def pairx_explanation_api(
    ibs: Any, query_annot_uuid: Any = None, database_annot_uuid: Any = None, query_config_dict: dict | None = None
) -> dict:
    """``GET /api/plugin/pairx/explanation/``: ``{"version": 1, "entry": ... | null}``."""
    if query_annot_uuid is None or database_annot_uuid is None:
        raise ConfigError("pass query_annot_uuid and database_annot_uuid")
    entry = wbia_plugin_pairx_explanation(ibs, query_annot_uuid, database_annot_uuid, query_config_dict)
    return {"version": 1, "entry": entry}


def pairx_image_route(
    ibs: Any, qaid: Any = None, daid: Any = None, version: str = "heatmask", query_config_dict: dict | None = None
) -> Any:
    """``GET /plugin/pairx/image/``: the picture as a PNG (an ``image/png`` flask response under WBIA,
    plain PNG bytes without flask)."""
    if qaid is None or daid is None:
        raise ConfigError("pass qaid and daid (annotation rowids) and optionally version")
    image = wbia_plugin_pairx_render(ibs, int(qaid), int(daid), version, query_config_dict)
    ok, buf = cv2.imencode(".png", image)  # cv2 encodes BGR arrays to correctly coloured PNG
    if not ok:
        raise ConfigError("PNG encoding failed")
    png = buf.tobytes()
    try:
        from flask import Response
    except ImportError:
        return png
    return Response(png, mimetype="image/png")


def _register(wbia: Any) -> None:
    inject = wbia.controller_inject
    _, register_ibs_method = inject.make_ibs_register_decorator(__name__)
    for func in (wbia_plugin_pairx_explain, wbia_plugin_pairx_render, wbia_plugin_pairx_explanation):
        register_ibs_method(func)
    register_api = inject.get_wbia_flask_api(__name__)
    register_route = inject.get_wbia_flask_route(__name__)
    register_api("/api/plugin/pairx/explanation/", methods=["GET", "POST"])(pairx_explanation_api)
    register_route("/plugin/pairx/image/", methods=["GET"])(pairx_image_route)
    configclass = host_config_class(wbia.dtool, wbia.param_info)
    register_table(inject.register_preprocs, wbia.constants.ANNOTATION_TABLE, configclass, get_runtime)
    miewid = _host.find_miewid()
    if miewid is not None:
        global MIEWID_ATTACHMENT
        configure(miewid.loader)
        MIEWID_ATTACHMENT = attach(miewid.request_cls, miewid.config_cls, wbia.param_info)


#: the hook on MiewID's request class when it was attached at import (``.remove()`` undoes it)
MIEWID_ATTACHMENT: PairxAttachment | None = None


WBIA = _host.find_wbia()
if WBIA is not None:
    _register(WBIA)
