"""Stand-in for ``wbia.control.controller_inject``: the registries a plugin uses at import time.

Copied behaviour (contract section 1): ``make_ibs_register_decorator`` binds ``f(ibs, ...)`` as
``ibs.f(...)`` on controllers built afterwards; ``register_api`` rules must end in ``/``, contain
no ``_``/``-``, no plural ``s/`` (unless the module sets ``__api_plural_check__ = False``), and no
``annotation``/``imgset``; ``register_route`` rules may not start with ``/api/`` (unless
``__route_prefix_check__ = False``); JSON APIs merge query, form and JSON-body arguments, JSON-decode
each value, inject ``ibs`` and wrap the result in ``{"status": ..., "response": ...}``.
``register_preprocs[...]`` only records registrations; ``DependencyCache.initialize`` applies them.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections import defaultdict

import numpy as np

# module name -> {method name: function}
IBS_METHODS: dict[str, dict[str, object]] = defaultdict(dict)
# rule -> (function, methods, module name)
API_RULES: dict[str, tuple] = {}
ROUTE_RULES: dict[str, tuple] = {}
# list of (kind, registration kwargs, function), applied by DependencyCache.initialize()
PREPROC_REGISTRATIONS: list[tuple[str, dict, object]] = []


class RuleError(AssertionError):
    """WBIA asserts on illegal rules at registration (import) time."""


def make_ibs_register_decorator(modname):
    class_inject_key = ("IBEISController", modname)

    def register_ibs_method(func):
        IBS_METHODS[modname][func.__name__] = func
        return func

    return class_inject_key, register_ibs_method


def bound_methods():
    """Every registered ibs method, as ``{name: func}`` (what a new controller binds)."""
    out = {}
    for methods in IBS_METHODS.values():
        out.update(methods)
    return out


def _module_flag(modname, flag, default=True):
    module = sys.modules.get(modname)
    return getattr(module, flag, default) if module is not None else default


def _check_api_rule(rule, modname):
    if not rule.endswith("/"):
        raise RuleError(f"API rule must end in '/': {rule!r}")
    if "_" in rule or "-" in rule:
        raise RuleError(f"API rule may not contain '_' or '-': {rule!r}")
    if _module_flag(modname, "__api_plural_check__") and "s/" in rule:
        raise RuleError(f"API rule looks plural ('s/'): {rule!r}")
    if "annotation" in rule or "imgset" in rule:
        raise RuleError(f"API rule should say 'annot'/'imageset': {rule!r}")


def get_wbia_flask_api(modname):
    def register_api(rule, methods=None, **kwargs):
        _check_api_rule(rule, modname)

        def decorator(func):
            API_RULES[rule] = (func, tuple(methods or ["GET"]), modname)
            return func

        return decorator

    return register_api


def get_wbia_flask_route(modname):
    def register_route(rule, methods=None, **kwargs):
        if not rule.endswith("/"):
            raise RuleError(f"route rule must end in '/': {rule!r}")
        if _module_flag(modname, "__route_prefix_check__") and rule.startswith("/api/"):
            raise RuleError(f"route rule may not start with '/api/': {rule!r}")

        def decorator(func):
            ROUTE_RULES[rule] = (func, tuple(methods or ["GET"]), modname)
            return func

        return decorator

    return register_route


def _make_preproc_registrar(kind):
    def register(
        tablename,
        parents,
        colnames,
        coltypes,
        configclass=None,
        requestclass=None,
        fname=None,
        chunksize=None,
        rm_extern_on_delete=False,
        **kwargs,
    ):
        def decorator(func):
            PREPROC_REGISTRATIONS.append(
                (
                    kind,
                    dict(
                        tablename=tablename,
                        parents=list(parents),
                        colnames=list(colnames),
                        coltypes=list(coltypes),
                        configclass=configclass,
                        requestclass=requestclass,
                        fname=fname,
                        chunksize=chunksize,
                        rm_extern_on_delete=rm_extern_on_delete,
                        **kwargs,
                    ),
                    func,
                )
            )
            return func

        return decorator

    return register


register_preprocs = {kind: _make_preproc_registrar(kind) for kind in ("annot", "image", "part")}


def to_json(value) -> str:
    """``ut.to_json``: numpy arrays become lists, UUIDs become ``{"__UUID__": "..."}``."""

    def default(obj):
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, uuid.UUID):
            return {"__UUID__": str(obj)}
        raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

    def convert(obj):
        # json.dumps does not call ``default`` for tuples/dicts holding UUIDs inside lists, so walk
        if isinstance(obj, dict):
            return {str(k): convert(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [convert(v) for v in obj]
        if isinstance(obj, uuid.UUID):
            return {"__UUID__": str(obj)}
        if isinstance(obj, np.ndarray):
            return convert(obj.tolist())
        if isinstance(obj, np.generic):
            return obj.item()
        return obj

    return json.dumps(convert(value), default=default)


def from_json(text: str):
    """``ut.from_json``: ``{"__UUID__": "..."}`` objects become ``uuid.UUID`` again."""

    def hook(obj):
        if set(obj) == {"__UUID__"}:
            return uuid.UUID(obj["__UUID__"])
        return obj

    return json.loads(text, object_hook=hook)


def _decode(value):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def call_api(ibs, rule, method="GET", query=None, form=None, json_body=None):
    """Serve one JSON API call the way WBIA's flask wrapper does; returns the decoded envelope."""
    if rule not in API_RULES:
        return {"status": {"success": False, "code": 404, "message": f"no rule {rule}", "cache": -1}, "response": None}
    func, methods, _ = API_RULES[rule]
    if method not in methods:
        return {
            "status": {"success": False, "code": 405, "message": "method not allowed", "cache": -1},
            "response": None,
        }
    kwargs = {}
    for source in (query or {}, form or {}, json_body or {}):
        kwargs.update({k: _decode(v) for k, v in source.items()})
    try:
        response = func(ibs=ibs, **kwargs)
        status = {"success": True, "code": 200, "message": "", "cache": -1}
    except Exception as exc:  # WBIA turns any exception into a failed envelope
        response = None
        status = {"success": False, "code": 400, "message": str(exc), "cache": -1}
    return json.loads(to_json({"status": status, "response": response}))


def call_route(ibs, rule, method="GET", **kwargs):
    func, methods, _ = ROUTE_RULES[rule]
    if method not in methods:
        raise RuleError(f"{method} not allowed on {rule}")
    return func(ibs=ibs, **kwargs)


def reset_registries_from(modname):
    """Forget everything a module registered (tests re-import the plugin)."""
    IBS_METHODS.pop(modname, None)
    for registry in (API_RULES, ROUTE_RULES):
        for rule in [r for r, (_, _, m) in registry.items() if m == modname]:
            del registry[rule]
    PREPROC_REGISTRATIONS[:] = [r for r in PREPROC_REGISTRATIONS if getattr(r[2], "__module__", None) != modname]
