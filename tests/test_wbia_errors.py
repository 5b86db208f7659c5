"""Bad inputs to the WBIA adapter: each gets one of our error types naming the input, or is recorded
against its own pair while the host's job and matches carry on."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from wbia_standin import dtool, graph, miewid
from wbia_standin.annotmatch import AnnotMatch
from wbia_standin.env import SMALL_XPX, deployment

from pairx_plugin.errors import ArtifactError, ConfigError, InvalidInputError, PairXError, UnsupportedModelError


@pytest.fixture(scope="module")
def env(seaturtle_dir, tmp_path_factory):
    with deployment(seaturtle_dir, tmp_path_factory.mktemp("wbia_err")) as env:
        yield env


@pytest.mark.parametrize(
    "key, value",
    [
        ("xpx_enabled", "yes"),
        ("xpx_top_k", -1),
        ("xpx_top_k", True),
        ("xpx_score", "best"),
        ("xpx_layer_key", ""),
        ("xpx_k_lines", 0),
        ("xpx_k_colors", 2.5),
        ("xpx_mode", "fast"),
        ("xpx_channel_order", "rbg"),
        ("xpx_render_on_demand", 1),
    ],
)
def test_bad_config_value_names_the_key(key, value):
    from wbia_pairx.config import XpxConfig

    with pytest.raises(ConfigError, match=key) as info:
        XpxConfig(**{key: value}).validated()
    assert "must be" in str(info.value)


class _BadChips:
    def __init__(self, chip):
        self.chip = chip

    def get_annot_chips(self, aids, config2_=None):
        return [self.chip for _ in aids] if isinstance(aids, list) else self.chip

    def get_annot_viewpoints(self, aid):
        return "left"


@pytest.mark.parametrize(
    "chip", [None, np.zeros((50, 40), np.uint8), np.zeros((50, 40, 3), np.float32), np.zeros((1, 40, 3), np.uint8)]
)
def test_bad_chip_names_the_annotation(chip):
    from wbia_pairx.chips import WbiaChipSource

    source = WbiaChipSource(_BadChips(chip), miewid.make_config())
    with pytest.raises(InvalidInputError, match="annotation 12"):
        source.load("12")


def test_bad_channel_order_and_image_id():
    from wbia_pairx.chips import WbiaChipSource, chip_to_input

    with pytest.raises(InvalidInputError, match="xpx_channel_order"):
        WbiaChipSource(_BadChips(None), miewid.make_config(), channel_order="hsv")
    with pytest.raises(InvalidInputError, match="channel_order"):
        chip_to_input(np.zeros((8, 8, 3), np.uint8), (8, 8), False, "hsv")
    source = WbiaChipSource(_BadChips(np.zeros((20, 30, 3), np.uint8)), miewid.make_config())
    with pytest.raises(InvalidInputError, match="'abc'"):
        source.load("abc")


def test_fliplr_by_viewpoint_mirrors_model_input_and_display(env):
    from wbia_pairx.chips import WbiaChipSource

    plain = WbiaChipSource(env.ibs, miewid.make_config()).load("3")
    flipped = WbiaChipSource(env.ibs, miewid.make_config(fliplr=True, fliplr_view=["right"])).load("3")
    np.testing.assert_array_equal(flipped.display, plain.display[:, ::-1])
    assert not torch.equal(flipped.tensor, plain.tensor)
    torch.testing.assert_close(
        flipped.tensor, WbiaChipSource(env.ibs, miewid.make_config(fliplr=True, fliplr_view=["right"])).load("3").tensor
    )
    unaffected = WbiaChipSource(env.ibs, miewid.make_config(fliplr=True, fliplr_view=["right"])).load("1")
    np.testing.assert_array_equal(unaffected.display, WbiaChipSource(env.ibs, miewid.make_config()).load("1").display)


def test_misaligned_scores_and_unknown_score_key():
    from wbia_pairx.selection import select_candidates

    cm = AnnotMatch()
    cm.qaid, cm.daid_list = 3, np.array([1, 2, 4])
    cm.annot_score_list = np.array([0.5, 0.4])
    with pytest.raises(InvalidInputError, match="query 3: annot_score_list has 2 entries for 3 daids"):
        select_candidates(cm, 2)
    with pytest.raises(InvalidInputError, match="xpx_score"):
        select_candidates(cm, 2, "best")
    cm.score_list = None
    with pytest.raises(InvalidInputError, match="score_list"):
        select_candidates(cm, 2, "name")


def test_model_loader_failures_are_our_errors():
    from wbia_pairx.models import ModelCache

    def broken(species):
        raise FileNotFoundError("/v_config/miewid/model_config.json")

    with pytest.raises(PairXError, match="'whale_beluga'.*model_config.json"):
        ModelCache(broken).get("whale_beluga")
    with pytest.raises(UnsupportedModelError, match="returned str for species 'zebra'"):
        ModelCache(lambda s: ("not a model", miewid.make_config(), ("u", "c"))).get("zebra")


def test_render_and_lookup_errors(env):
    from wbia_pairx.config import XpxConfig

    xpx = XpxConfig(**SMALL_XPX)
    with pytest.raises(InvalidInputError, match="'thumbnail'"):
        env.runtime.render(env.ibs, 1, 2, "thumbnail", xpx)
    with pytest.raises(InvalidInputError, match="annotation 2 is both query and database"):
        env.runtime.ensure_entry(env.ibs, 2, 2, xpx)
    no_demand = XpxConfig(**{**SMALL_XPX, "xpx_render_on_demand": False, "xpx_k_lines": 3})
    with pytest.raises(ArtifactError, match="xpx_render_on_demand"):
        env.runtime.render(env.ibs, 4, 5, "heatmask", no_demand)


def test_damaged_index_entry_is_an_artifact_error(tmp_path):
    from wbia_pairx.index import ExplanationIndex, entry_name

    index = ExplanationIndex(tmp_path)
    index.dir.mkdir(parents=True)
    (index.dir / entry_name("q", "d", "c")).write_text("{not json")
    with pytest.raises(ArtifactError, match="damaged"):
        index.get("q", "d", "c")
    assert index.get("q", "other", "c") is None


def test_attach_refuses_clashing_or_undeclared_config_class(env):
    from wbia_pairx.request_hook import enable_pairx

    class Clashing(dtool.Config):
        _param_info_list = [dtool.ParamInfo("xpx_k_lines", 3)]

    with pytest.raises(ConfigError, match="xpx_k_lines"):
        enable_pairx(miewid.MiewIdRequest, env.runtime, Clashing)

    class Empty(dtool.Config):
        _param_info_list = []

    with pytest.raises(ConfigError, match="param_info"):
        enable_pairx(miewid.MiewIdRequest, env.runtime, Empty)
    assert "postprocess_execute" in miewid.MiewIdRequest.__dict__  # nothing was wrapped
    assert not hasattr(miewid.MiewIdRequest.postprocess_execute, "__wrapped__")


def test_configure_without_loader_or_miewid_names_what_to_do(env):
    with pytest.raises(ConfigError, match="read_config_and_load_model"):
        env.plugin.configure(loader=None)
    env.plugin.configure(loader=miewid.read_config_and_load_model, store_root=env.runtime.store_root(env.ibs))


def test_plugin_api_bad_uuids(env):
    with pytest.raises(ConfigError, match="'nope'"):
        env.plugin.wbia_plugin_pairx_explanation(env.ibs, "nope", "x")
    import uuid

    with pytest.raises(ConfigError, match="unknown annotation UUID"):
        env.plugin.wbia_plugin_pairx_explanation(env.ibs, uuid.uuid4(), env.ibs.get_annot_uuids(1))
    with pytest.raises(ConfigError, match="query_annot_uuid"):
        env.plugin.pairx_explanation_api(env.ibs)


@pytest.mark.slow
def test_a_raising_chip_read_fails_only_its_pair(env):
    from wbia_pairx.config import XpxConfig
    from wbia_pairx.selection import Candidate

    ibs = env.ibs
    real = ibs.get_annot_chips

    def raising(aids, config2_=None, ensure=True):
        if 5 in (aids if isinstance(aids, list) else [aids]):
            raise OSError("chip of annotation 5: image file is gone")
        return real(aids)

    ibs.get_annot_chips = raising
    try:
        xpx = XpxConfig(**{**SMALL_XPX, "xpx_k_colors": 1})
        entries = env.runtime.explain_candidates(ibs, [Candidate(2, 1, 0, 0.9), Candidate(2, 5, 1, 0.8)], xpx)
    finally:
        ibs.get_annot_chips = real
    by_daid = {e.daid: e for e in entries}
    assert by_daid[1].explanation is not None
    assert by_daid[5].explanation_error.stage == "load"
    assert "image file is gone" in by_daid[5].explanation_error.message


@pytest.mark.slow
def test_one_unreadable_chip_fails_only_its_pair_and_job_keeps_matches(env):
    from wbia_pairx.config import XpxConfig
    from wbia_pairx.selection import Candidate

    ibs = env.ibs
    real = ibs.get_annot_chips

    def chips_with_a_hole(aids, config2_=None, ensure=True):
        if isinstance(aids, list):
            return [None if int(a) == 5 else real(int(a)) for a in aids]
        return None if int(aids) == 5 else real(aids)

    ibs.get_annot_chips = chips_with_a_hole
    try:
        xpx = XpxConfig(**{**SMALL_XPX, "xpx_k_colors": 1})
        entries = env.runtime.explain_candidates(ibs, [Candidate(2, 1, 0, 0.9), Candidate(2, 5, 1, 0.8)], xpx)
        by_daid = {e.daid: e for e in entries}
        assert by_daid[1].explanation is not None
        assert by_daid[5].explanation is None and "annotation 5" in by_daid[5].explanation_error.message
        # the same hole during a hooked job: the job finishes, scores as without the hook
        with env.plugin.attach(miewid.MiewIdRequest, miewid.MiewIdConfig):
            qreq_ = graph.new_query_request(ibs, [2], [1, 5], dict(SMALL_XPX, xpx_k_colors=1))
            ibs.get_annot_chips = real  # the host scores with good chips ...
            hooked_scores = None
            original_post = miewid.MiewIdRequest.postprocess_execute

            def post_then_break(self, *a):
                ibs.get_annot_chips = chips_with_a_hole  # ... then the adapter meets the hole
                return original_post(self, *a)

            miewid.MiewIdRequest.postprocess_execute = post_then_break
            try:
                cm_list = qreq_.execute()
            finally:
                miewid.MiewIdRequest.postprocess_execute = original_post
            hooked_scores = cm_list[0].annot_score_list
        ibs.get_annot_chips = real
        plain = graph.new_query_request(ibs, [2], [1, 5], dict(SMALL_XPX)).execute()
        assert hooked_scores.tobytes() == plain[0].annot_score_list.tobytes()
    finally:
        ibs.get_annot_chips = real


def test_disabled_config_renders_host_picture(env):
    with env.plugin.attach(miewid.MiewIdRequest, miewid.MiewIdConfig):
        qreq_ = graph.new_query_request(env.ibs, [1], [2], {"xpx_enabled": False})
        cm = AnnotMatch(qaid=1, daid_list=[2], dnid_list=[1], annot_score_list=[0.5], score_list=[0.5])
        image = qreq_.render_single_result(cm, 2, heatmask=True)
    q, d = env.ibs.get_annot_chips([1, 2])
    assert image.shape == (max(q.shape[0], d.shape[0]), q.shape[1] + d.shape[1], 3)


def test_plugin_without_wbia_registers_nothing_and_exposes_functions():
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    code = (
        "import sys, wbia_pairx\n"
        "from wbia_pairx import _plugin as p\n"
        "assert 'wbia' not in sys.modules, 'wbia imported'\n"
        "assert p.WBIA is None\n"
        "names = ['wbia_plugin_pairx_explain', 'wbia_plugin_pairx_render', 'wbia_plugin_pairx_explanation',\n"
        "         'attach', 'configure', 'pairx_explanation_api', 'pairx_image_route']\n"
        "assert all(callable(getattr(p, n)) for n in names)\n"
        "print('plain-ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=f"{repo}{os.pathsep}{repo / 'adapters'}")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "plain-ok" in out.stdout
