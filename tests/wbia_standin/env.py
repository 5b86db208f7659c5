"""Building a stand-in WBIA deployment with the adapter loaded the way WBIA loads plugins."""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from . import controller_inject, installed, miewid
from .controller import StandinController

PLUGIN_MODULE = "wbia_pairx._plugin"
#: small settings that keep each explanation to a few seconds on two CPU cores
SMALL_XPX = {"xpx_top_k": 2, "xpx_k_lines": 5, "xpx_k_colors": 2}


def fresh_plugin_import():
    """Import ``wbia_pairx._plugin`` anew (as WBIA's autoload does), returning the module."""
    controller_inject.reset_registries_from(PLUGIN_MODULE)
    sys.modules.pop(PLUGIN_MODULE, None)
    return importlib.import_module(PLUGIN_MODULE)


@contextlib.contextmanager
def deployment(seaturtle_dir: Path, root: Path):
    """Stand-in WBIA + MiewID-like plugin + our plugin, a controller, a configured runtime."""
    torch.set_num_threads(1)
    with installed():
        plugin = fresh_plugin_import()
        miewid.register()
        ibs = StandinController(seaturtle_dir, root / "cache")
        runtime = plugin.configure(loader=miewid.read_config_and_load_model, store_root=root / "pairx")
        try:
            yield SimpleNamespace(plugin=plugin, ibs=ibs, runtime=runtime, root=root)
        finally:
            controller_inject.reset_registries_from(PLUGIN_MODULE)
            sys.modules.pop(PLUGIN_MODULE, None)
