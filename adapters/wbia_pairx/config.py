"""The adapter's WBIA-style configuration: ``xpx_*`` keys, unknown keys dropped, a config string.

WBIA builds a request's configuration as ``configclass(**query_config_dict)`` and silently drops
keys the class does not declare; MiewID already owns every ``pairx_*`` name, so ours start with
``xpx_``. ``XpxConfig`` behaves like ``dtool.Config`` (declared parameters, unknown keys dropped,
``get_cfgstr()``) without needing WBIA; :func:`host_config_class` builds a real ``dtool.Config``
subclass with the same parameters when WBIA is present.

Every parameter that changes a picture is in ``get_cfgstr()`` (so WBIA's thumbnail cache key, which
hashes the request's cfgstr, changes with it). Values are validated when the config is read
(:meth:`XpxConfig.validated`), raising :class:`~pairx_plugin.errors.ConfigError` that names the key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pairx_plugin.config import PairXConfig
from pairx_plugin.errors import ConfigError

from .rerank import RERANK_PARAM_SPECS, rerank_config

CHANNEL_ORDERS = ("bgr", "rgb")
SCORE_KEYS = ("annot", "name")
MODES = ("conservative", "parity")
#: the PAIR-X panels a WBIA thumbnail version shows (``render_single_result``); all three are
#: PAIR-X pictures, so Wildbook's heatmask fetch and WBIA's review page both show PAIR-X.
VERSION_PANELS = {"heatmask": "composite", "matches": "only_lines", "clean": "only_colors"}


@dataclass(frozen=True)
class XpxParam:
    name: str
    default: Any
    check: Callable[[Any], bool]
    expected: str
    in_cfgstr: bool = True  # False only for keys that change neither scores nor pictures


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _non_negative_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


XPX_PARAMS: tuple[XpxParam, ...] = (
    XpxParam("xpx_enabled", True, lambda v: isinstance(v, bool), "true or false"),
    XpxParam("xpx_top_k", 5, _non_negative_int, "an integer >= 0 (candidates explained per query)"),
    XpxParam(
        "xpx_score",
        "annot",
        lambda v: v in SCORE_KEYS,
        "'annot' (rank by annot_score_list) or 'name' (rank by name-best score_list)",
    ),
    XpxParam(
        "xpx_layer_key",
        "backbone.blocks.3",
        lambda v: isinstance(v, str) and bool(v.strip()),
        "a dotted module name such as 'backbone.blocks.3'",
    ),
    XpxParam("xpx_k_lines", 20, _positive_int, "an integer >= 1"),
    XpxParam("xpx_k_colors", 10, _positive_int, "an integer >= 1"),
    XpxParam("xpx_mode", "conservative", lambda v: v in MODES, "'conservative' or 'parity'"),
    XpxParam(
        "xpx_channel_order",
        "bgr",
        lambda v: v in CHANNEL_ORDERS,
        "'bgr' (feed WBIA's BGR chip as is, as MiewID scores it) or 'rgb' (convert first)",
    ),
    XpxParam("xpx_render_on_demand", True, lambda v: isinstance(v, bool), "true or false", in_cfgstr=False),
) + tuple(XpxParam(*spec) for spec in RERANK_PARAM_SPECS)  # H6: opt-in re-ranking (rerank.py)
PARAM_NAMES = tuple(p.name for p in XPX_PARAMS)


class XpxConfig:
    """``dtool.Config``-like: declared ``xpx_*`` parameters; unknown keys are dropped silently."""

    _param_info_list = XPX_PARAMS
    # set from XPX_PARAMS in __init__; declared here for the type checker (keep in step with XPX_PARAMS)
    xpx_enabled: bool
    xpx_top_k: int
    xpx_score: str
    xpx_layer_key: str
    xpx_k_lines: int
    xpx_k_colors: int
    xpx_mode: str
    xpx_channel_order: str
    xpx_render_on_demand: bool

    def __init__(self, **cfgdict: Any) -> None:
        for param in XPX_PARAMS:
            setattr(self, param.name, cfgdict.get(param.name, param.default))

    @classmethod
    def from_mapping(cls, mapping: Any) -> XpxConfig:
        """From a dict, a ``dtool.Config``/request config (``parse_items``) or ``None``."""
        if mapping is None:
            return cls()
        if hasattr(mapping, "parse_items"):
            mapping = dict(mapping.parse_items())
        return cls(**dict(mapping))

    def parse_items(self) -> list[tuple[str, Any]]:
        return [(p.name, getattr(self, p.name)) for p in XPX_PARAMS]

    def get_cfgstr(self) -> str:
        body = ",".join(f"{p.name}={getattr(self, p.name)}" for p in XPX_PARAMS if p.in_cfgstr)
        return f"XpxConfig({body})"

    def validated(self) -> XpxConfig:
        """Itself, after checking every value; :class:`ConfigError` names the first bad key."""
        for param in XPX_PARAMS:
            value = getattr(self, param.name)
            if not param.check(value):
                raise ConfigError(f"{param.name}: must be {param.expected}, got {value!r}")
        return self

    def pairx_config(self) -> PairXConfig:
        """The core ``PairXConfig`` for the hook (panels: the three thumbnail pictures)."""
        self.validated()
        return PairXConfig(
            layer_keys=[self.xpx_layer_key],
            top_k=max(1, self.xpx_top_k),
            k_lines=self.xpx_k_lines,
            k_colors=self.xpx_k_colors,
            mode=self.xpx_mode,
            render=sorted(set(VERSION_PANELS.values())),
            rerank=rerank_config(self),
        )

    def __repr__(self) -> str:
        return self.get_cfgstr()


def host_config_class(dtool: Any, param_info: Callable[..., Any], base: type | None = None) -> type:
    """A ``dtool.Config`` subclass declaring the ``xpx_*`` parameters (for WBIA's depc table).

    With ``base`` (a host's config class such as ``MiewIdConfig``) the result declares the host's
    parameters followed by ours, so the host request's cfgstr covers both.
    """
    parent = base if base is not None else dtool.Config
    inherited = list(getattr(parent, "_param_info_list", []) or [])
    ours = [param_info(p.name, p.default) for p in XPX_PARAMS]
    name = f"{parent.__name__}WithXpx" if base is not None else "PairxExplanationConfig"
    return type(name, (parent,), {"_param_info_list": inherited + ours})
