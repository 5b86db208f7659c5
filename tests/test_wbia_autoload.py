"""Importing the plugin inside a WBIA that also has MiewID attaches the hook to MiewID by itself."""

from __future__ import annotations

import sys
import types

import pytest
from wbia_standin import controller_inject, graph, installed, miewid, modules_replaced
from wbia_standin.env import PLUGIN_MODULE, fresh_plugin_import


@pytest.fixture
def miewid_plugin_module():
    """``wbia_miew_id._plugin`` as the stand-in MiewID (request class, config class, loader)."""
    package = types.ModuleType("wbia_miew_id")
    package.__path__ = []
    plugin = types.ModuleType("wbia_miew_id._plugin")
    plugin.MiewIdRequest = miewid.MiewIdRequest
    plugin.MiewIdConfig = miewid.MiewIdConfig
    plugin.read_config_and_load_model = miewid.read_config_and_load_model
    package._plugin = plugin
    with modules_replaced({"wbia_miew_id": package, "wbia_miew_id._plugin": plugin}):
        yield plugin


def test_import_attaches_to_miewid_and_remove_restores_it(miewid_plugin_module, seaturtle_dir, tmp_path):
    original_post = miewid.MiewIdRequest.__dict__["postprocess_execute"]
    original_render = miewid.MiewIdRequest.__dict__["render_single_result"]
    original_params = list(miewid.MiewIdConfig._param_info_list)
    with installed():
        plugin = fresh_plugin_import()
        try:
            attachment = plugin.MIEWID_ATTACHMENT
            assert attachment is not None and attachment.active
            assert miewid.MiewIdRequest.__dict__["postprocess_execute"] is not original_post
            assert miewid.MiewIdRequest.postprocess_execute.__wrapped__ is original_post
            declared = [p.varname for p in miewid.MiewIdConfig._param_info_list]
            assert declared[: len(original_params)] == [p.varname for p in original_params]
            assert "xpx_k_colors" in declared and "xpx_channel_order" in declared
            assert plugin.get_runtime().models._loader is miewid.read_config_and_load_model
            # the extended config keeps our keys and MiewID's: WBIA's cfgdict path
            miewid.register()
            from wbia_standin.controller import StandinController

            ibs = StandinController(seaturtle_dir, tmp_path / "cache")
            qreq_ = graph.new_query_request(ibs, [1], [2], {"xpx_top_k": 3, "pairx_alpha": 0.5, "junk": 1})
            assert qreq_.params["xpx_top_k"] == 3 and qreq_.params["pairx_alpha"] == 0.5
            assert "junk" not in qreq_.params
        finally:
            plugin.MIEWID_ATTACHMENT.remove()
            controller_inject.reset_registries_from(PLUGIN_MODULE)
            sys.modules.pop(PLUGIN_MODULE, None)
    assert miewid.MiewIdRequest.__dict__["postprocess_execute"] is original_post
    assert miewid.MiewIdRequest.__dict__["render_single_result"] is original_render
    assert miewid.MiewIdConfig._param_info_list == original_params
    assert "_param_info_list" in miewid.MiewIdConfig.__dict__


def test_image_route_without_ids_names_them():
    from pairx_plugin.errors import ConfigError
    from wbia_pairx import _plugin

    with pytest.raises(ConfigError, match="qaid and daid"):
        _plugin.pairx_image_route(ibs=None)
