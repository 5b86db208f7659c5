"""Attaching PAIR-X to a host identification request class (e.g. MiewID's ``MiewIdRequest``).

:func:`enable_pairx` wraps the class's ``postprocess_execute`` and ``render_single_result`` and
(optionally) adds the ``xpx_*`` parameters to the host's config class, so WBIA keeps them (it drops
undeclared keys) and its thumbnail cache key (the request cfgstr) changes with them. It returns a
:class:`PairxAttachment` that restores everything on ``remove()`` or on leaving its ``with`` block.

After ``postprocess_execute`` returns the ``AnnotMatch`` list, the top-k candidates of each cm are
explained and indexed by (query UUID, database UUID, config digest); the list that goes back to the
host is the very object the original returned, untouched. Any failure is logged, never raised.

``render_single_result(cm, aid, **render_config)`` returns the stored PAIR-X picture of the
requested version (``heatmask`` / matches / clean) as HxWx3 uint8 BGR, explaining on demand when
the pair was not in the top-k. It reads only ``cm.qaid`` (a cm rebuilt by ``from_dict`` works).
With ``xpx_enabled`` false it calls the host's own renderer. If PAIR-X cannot explain the pair it
raises, and WBIA records ``'error'`` for that thumbnail; the match is kept.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from .config import XPX_PARAMS, XpxConfig
from .runtime import WbiaPairx, render_version

log = logging.getLogger(__name__)

_MISSING = object()


def request_xpx_config(request: Any) -> XpxConfig:
    """The ``xpx_*`` values of a host request (``.params`` dict, else ``.config``)."""
    params = getattr(request, "params", None)
    if params is None:
        params = getattr(request, "config", None)
    return XpxConfig.from_mapping(params)


class PairxAttachment:
    """What :func:`enable_pairx` changed, and how to undo it."""

    def __init__(self, request_cls: type, runtime: WbiaPairx, config_cls: Any) -> None:
        self.request_cls = request_cls
        self.runtime = runtime
        self.config_cls = config_cls
        self._saved_methods: dict[str, Any] = {}
        self._saved_params: Any = _MISSING
        self.active = False

    def _wrap_method(self, name: str, make: Callable[[Callable], Callable]) -> None:
        own = self.request_cls.__dict__.get(name, _MISSING)
        self._saved_methods[name] = own
        original = getattr(self.request_cls, name)
        setattr(self.request_cls, name, make(original))

    def remove(self) -> None:
        if not self.active:
            return
        for name, own in self._saved_methods.items():
            if own is _MISSING:
                delattr(self.request_cls, name)
            else:
                setattr(self.request_cls, name, own)
        if self.config_cls is not None and self._saved_params is not _MISSING:
            if self._saved_params is None:
                delattr(self.config_cls, "_param_info_list")
            else:
                self.config_cls._param_info_list = self._saved_params
        self.active = False

    def __enter__(self) -> PairxAttachment:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def _postprocess_wrapper(runtime: WbiaPairx) -> Callable[[Callable], Callable]:
    def make(original: Callable) -> Callable:
        @functools.wraps(original)
        def postprocess_execute(self, table, parent_rowids, rowids, result_list):
            cm_list = original(self, table, parent_rowids, rowids, result_list)
            try:
                xpx = request_xpx_config(self)
                if xpx.xpx_enabled and cm_list:
                    runtime.explain_cm_list(self.depc.controller, cm_list, xpx)
            except Exception:  # explanations never fail the identification job
                log.exception("PAIR-X post-matching hook failed; the matches are returned unchanged")
            return cm_list

        return postprocess_execute

    return make


def _render_wrapper(runtime: WbiaPairx) -> Callable[[Callable], Callable]:
    def make(original: Callable) -> Callable:
        @functools.wraps(original)
        def render_single_result(self, cm, aid, **render_config):
            xpx = request_xpx_config(self)
            if not xpx.xpx_enabled:
                return original(self, cm, aid, **render_config)
            score = float("nan")
            idx = (getattr(cm, "daid2_idx", None) or {}).get(int(aid))
            if idx is not None and getattr(cm, "annot_score_list", None) is not None:
                score = float(cm.annot_score_list[idx])
            return runtime.render(
                self.depc.controller, int(cm.qaid), int(aid), render_version(render_config), xpx, score
            )

        return render_single_result

    return make


def enable_pairx(
    request_cls: type, runtime: WbiaPairx, config_cls: Any = None, param_info: Callable[..., Any] | None = None
) -> PairxAttachment:
    """Wrap ``request_cls`` (and extend ``config_cls``'s parameters); see the module docstring.

    ``param_info`` builds one parameter declaration (``ut.ParamInfo``); by default the type of the
    config class's first declared parameter is used.
    """
    attachment = PairxAttachment(request_cls, runtime, config_cls)
    if config_cls is not None:
        declared = config_cls.__dict__.get("_param_info_list", None)
        existing = list(getattr(config_cls, "_param_info_list", []) or [])
        names = {name for p in existing if isinstance(name := getattr(p, "varname", None), str)}
        clash = names & {p.name for p in XPX_PARAMS}
        if clash:
            from pairx_plugin.errors import ConfigError

            raise ConfigError(
                f"{config_cls.__name__} already declares {sorted(clash)}; "
                "the xpx_* names must be unique in the dependency graph"
            )
        if param_info is None:
            if not existing:
                from pairx_plugin.errors import ConfigError

                raise ConfigError(f"{config_cls.__name__} declares no parameters; pass param_info=ut.ParamInfo")
            param_info = type(existing[0])
        attachment._saved_params = declared
        config_cls._param_info_list = existing + [param_info(p.name, p.default) for p in XPX_PARAMS]
    attachment._wrap_method("postprocess_execute", _postprocess_wrapper(runtime))
    attachment._wrap_method("render_single_result", _render_wrapper(runtime))
    attachment.active = True
    return attachment
