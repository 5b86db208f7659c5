"""The 18-point checklist of ../shared/docs/wbia_contract.md (section 6), one test per point.

Runs against the stand-in WBIA (tests/wbia_standin) with a MiewID-like model (timm
efficientnet_lite0 backbone with ImageNet weights + GeM + BatchNorm1d) at 224 px and small k values.
"""

from __future__ import annotations

import inspect
import io
import json
import threading
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from wbia_standin import controller_inject, dtool, graph, miewid
from wbia_standin.annotmatch import AnnotMatch
from wbia_standin.env import SMALL_XPX, deployment

from pairx_plugin.errors import ConfigError

pytestmark = pytest.mark.slow  # the module's fixtures run the real engine on a MiewID-like model

QUERY = 1
DAIDS = [1, 2, 3, 4, 5]  # includes the query (WBIA's include_qaid_in_daids default)
SCORE_FIELDS = ("qaid", "daid_list", "dnid_list", "annot_score_list", "score_list", "name_score_list")


@pytest.fixture(scope="module")
def env(seaturtle_dir, tmp_path_factory):
    with deployment(seaturtle_dir, tmp_path_factory.mktemp("wbia")) as env:
        yield env


@pytest.fixture(scope="module")
def baseline(env):
    """The query without PAIR-X attached (the xpx_* keys are dropped by MiewIdConfig)."""
    qreq_ = graph.new_query_request(env.ibs, [QUERY], DAIDS, dict(SMALL_XPX))
    return qreq_.execute()


class RecordingRequest(miewid.MiewIdRequest):
    """Remembers exactly what the host's postprocess_execute returned."""

    def postprocess_execute(self, table, parent_rowids, rowids, result_list):
        returned = super().postprocess_execute(table, parent_rowids, rowids, result_list)
        self.host_returned = returned
        self.host_returned_items = list(returned)
        return returned


@pytest.fixture(scope="module")
def hooked(env):
    """The same query with PAIR-X attached: direct execute, then query_chips_graph with thumbnails."""
    with env.plugin.attach(RecordingRequest, miewid.MiewIdConfig):
        qreq_ = RecordingRequest.new(env.ibs.depc_annot, [QUERY], DAIDS, dict(SMALL_XPX), tablename="MiewId")
        cm_list = qreq_.execute()
    with env.plugin.attach(miewid.MiewIdRequest, miewid.MiewIdConfig):
        json_result, graph_cms, graph_qreq = graph.query_chips_graph(env.ibs, [QUERY], DAIDS, dict(SMALL_XPX), n=3)
    return {"qreq": qreq_, "cm_list": cm_list, "json": json_result, "graph_cms": graph_cms, "graph_qreq": graph_qreq}


def _xpx(**over):
    from wbia_pairx.config import XpxConfig

    return XpxConfig(**{**SMALL_XPX, **over})


# ------------------------------------------------------------------------------------------ 1
def test_checklist_01_registers_ibs_methods_at_import(env, seaturtle_dir, tmp_path):
    from wbia_standin import installed
    from wbia_standin.controller import StandinController

    registered = controller_inject.IBS_METHODS["wbia_pairx._plugin"]
    assert set(registered) == {"wbia_plugin_pairx_explain", "wbia_plugin_pairx_render", "wbia_plugin_pairx_explanation"}
    # a controller built after the import has them bound: ibs.f(*a) calls f(ibs, *a)
    with installed():
        ibs = StandinController(seaturtle_dir, tmp_path / "cache")
    seen = []
    original = registered["wbia_plugin_pairx_explanation"]
    registered["wbia_plugin_pairx_explanation"] = lambda ibs_, *a: seen.append((ibs_, a)) or "called"
    try:
        with installed():
            ibs2 = StandinController(seaturtle_dir, tmp_path / "cache2")
        assert ibs2.wbia_plugin_pairx_explanation("q", "d") == "called"
        assert seen == [(ibs2, ("q", "d"))]
    finally:
        registered["wbia_plugin_pairx_explanation"] = original
    assert callable(ibs.wbia_plugin_pairx_render)
    assert ibs.wbia_plugin_pairx_render.func is env.plugin.wbia_plugin_pairx_render
    # called as a controller method on the deployment's ibs: explains (here: finds) the pair
    (entry,) = env.ibs.wbia_plugin_pairx_explain(2, [2, 1], dict(SMALL_XPX, xpx_k_colors=1))
    assert entry["database_uuid"] == str(env.ibs.get_annot_uuids(1)) and "explanation" in entry
    image = env.ibs.wbia_plugin_pairx_render(2, 1, "matches", dict(SMALL_XPX, xpx_k_colors=1))
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


# ------------------------------------------------------------------------------------------ 2
class _SpyController:
    """Records which controller methods the adapter calls."""

    def __init__(self, ibs):
        self._ibs = ibs
        self.calls = []

    def __getattr__(self, name):
        target = getattr(self._ibs, name)
        if callable(target):

            def wrapper(*a, **k):
                self.calls.append(name)
                return target(*a, **k)

            return wrapper
        return target


def test_checklist_02_getters_have_wbia_shapes_and_adapter_uses_only_them(env):
    from wbia_pairx.chips import WbiaChipSource

    ibs = env.ibs
    assert isinstance(ibs.get_annot_bboxes(1), tuple) and len(ibs.get_annot_bboxes(1)) == 4
    assert [len(b) for b in ibs.get_annot_bboxes([1, 3])] == [4, 4]
    assert ibs.get_annot_thetas([2, 3]) == [None, 0.15]
    assert ibs.get_annot_species_texts(4) == "____"
    assert ibs.get_annot_nids(4) == -4 and ibs.get_annot_nids([1, 4]) == [1, -4]
    assert isinstance(ibs.get_annot_uuids(1), uuid.UUID)
    assert isinstance(ibs.get_annot_image_paths([1]), list)

    spy = _SpyController(ibs)
    _, config, _ = miewid.read_config_and_load_model("sea_turtle")
    loaded = WbiaChipSource(spy, config).load("3")
    assert loaded.tensor.shape == (1, 3, 224, 224)
    assert set(spy.calls) <= {"get_annot_chips", "get_annot_viewpoints"}
    assert "get_annot_chips" in spy.calls


# ------------------------------------------------------------------------------------------ 3
def test_checklist_03_chips_are_bgr_non_square_longest_700(env, seaturtle_dir):
    from wbia_pairx.chips import WbiaChipSource

    chip = env.ibs.get_annot_chips(1)
    assert chip.dtype == np.uint8 and chip.ndim == 3 and max(chip.shape[:2]) == 700
    assert chip.shape[0] != chip.shape[1]
    # the chip is BGR: compare the unrotated annotation 1 (bbox 30,50,450,540) with the RGB file
    rgb = np.asarray(Image.open(seaturtle_dir / "images/identity_a/image_1.JPG").convert("RGB"))
    crop = cv2.resize(rgb[50:590, 30:480], (chip.shape[1], chip.shape[0]), interpolation=cv2.INTER_AREA)
    as_bgr = np.abs(chip[:, :, ::-1].astype(float) - crop).mean()
    as_rgb = np.abs(chip.astype(float) - crop).mean()
    assert as_bgr < 12 and as_rgb > as_bgr + 5
    # the adapter's display image is RGB and resizing drops the aspect ratio
    _, config, _ = miewid.read_config_and_load_model("sea_turtle")
    loaded = WbiaChipSource(env.ibs, config).load("1")
    np.testing.assert_array_equal(loaded.display, chip[:, :, ::-1])
    assert loaded.tensor.shape[-2:] == (224, 224)


# ------------------------------------------------------------------------------------------ 4
def test_checklist_04_explained_cosine_reproduces_host_score(env, hooked):
    cm = hooked["cm_list"][0]
    xpx = _xpx()
    checked = 0
    for daid, score in zip(cm.daid_list, cm.annot_score_list):
        entry = env.runtime.lookup(env.ibs, QUERY, int(daid), xpx)
        if entry is None:
            continue
        assert entry.explanation is not None, entry.explanation_error
        assert abs((1.0 + entry.explanation.cosine) / 2.0 - score) < 1e-3
        checked += 1
    assert checked >= 2  # the hook's top 2, plus any thumbnail explained on demand
    # the same chip converted to RGB is another input: its cosine does not reproduce the score
    from wbia_pairx.chips import WbiaChipSource

    cached = env.runtime.models.get("sea_turtle")
    src_rgb = WbiaChipSource(env.ibs, cached.host_config, "rgb")
    with torch.no_grad():
        e = [cached.model(src_rgb.load(str(a)).tensor) for a in (QUERY, 2)]
    cos_rgb = torch.nn.functional.cosine_similarity(e[0], e[1]).item()
    idx = list(cm.daid_list).index(2)
    assert abs((1 + cos_rgb) / 2 - cm.annot_score_list[idx]) > 1e-3


# ------------------------------------------------------------------------------------------ 5
def test_checklist_05_model_comes_from_host_loader_with_default_fallback(env):
    from wbia_pairx.chips import WbiaChipSource

    model, config, (model_url, config_url) = miewid.read_config_and_load_model("no_such_species")
    assert model_url == miewid.MODEL_BIN_CONFIG["default"] and config_url == miewid.MODEL_CONFIG["default"]
    assert dict(model.named_modules()).get("backbone.blocks.3") is not None
    assert not hasattr(model, "device")
    config.data.image_size = [160, 192]  # the adapter takes the host's image size, (h, w)
    assert WbiaChipSource(env.ibs, config).load("2").tensor.shape == (1, 3, 160, 192)
    before = len(miewid.LOAD_CALLS)
    cached = env.runtime.models.get("____")  # unknown species -> the 'default' model
    assert cached.model_url == miewid.MODEL_BIN_CONFIG["default"]
    assert len(miewid.LOAD_CALLS) in (before, before + 1)


# ------------------------------------------------------------------------------------------ 6
def test_checklist_06_models_cached_per_url_and_device_on_cpu():
    from wbia_pairx.models import ModelCache

    calls = []

    def loader(species):
        calls.append(species)
        model, config, urls = miewid.read_config_and_load_model(species)
        if species == "other":
            urls = ("https://standin.invalid/other.bin", urls[1])
        return model, config, urls

    cache = ModelCache(loader)
    a = cache.get("sea_turtle")
    assert cache.get("turtle_green") is a  # an alias of the same weights: one instance
    assert cache.get("____") is a
    assert cache.get("sea_turtle") is a and calls.count("sea_turtle") == 1
    b = cache.get("other")
    assert b is not a and len(cache) == 2
    assert a.device == "cpu" and next(a.model.parameters()).device.type == "cpu"
    from pairx_plugin.engine.locks import model_lock

    assert a.lock is model_lock(a.model) and a.lock is not b.lock  # the engine's one lock per model


def test_checklist_06b_use_gpu_without_cuda_runs_on_cpu():
    from wbia_pairx.models import host_device

    config = miewid.make_config()
    config.use_gpu = True
    config.engine.device = "cuda"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert host_device(config) == expected
    config.use_gpu = False
    assert host_device(config) == "cpu"


# ------------------------------------------------------------------------------------------ 7
def _model_state(model):
    return {
        "training": [(n, m.training) for n, m in model.named_modules()],
        "requires_grad": [(n, p.requires_grad) for n, p in model.named_parameters()],
        "grads": [n for n, p in model.named_parameters() if p.grad is not None],
        "hooks": [
            (
                n,
                len(m._forward_hooks),
                len(m._forward_pre_hooks),
                len(m._backward_hooks),
                len(getattr(m, "_backward_pre_hooks", {})),
            )
            for n, m in model.named_modules()
        ],
        "device_attr": hasattr(model, "device"),
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "buffers": {n: b.detach().clone() for n, b in model.named_buffers()},
    }


def test_checklist_07_model_left_exactly_as_found(env, hooked):
    cached = env.runtime.models.get("sea_turtle")
    model = cached.model
    model.backbone.blocks[0].requires_grad_(False)  # a partly frozen model must stay so
    before = _model_state(model)
    assert not any(h for _, *hs in before["hooks"] for h in hs)
    env.runtime.explain_candidates(
        env.ibs,
        [__import__("wbia_pairx.selection", fromlist=["Candidate"]).Candidate(QUERY, 5, 0, 0.5)],
        _xpx(xpx_k_colors=1),
    )
    after = _model_state(model)
    try:
        for key in ("training", "requires_grad", "grads", "hooks", "device_attr"):
            assert after[key] == before[key], key
        for n in before["params"]:
            assert torch.equal(before["params"][n], after["params"][n]), n
        for n in before["buffers"]:
            assert torch.equal(before["buffers"][n], after["buffers"][n]), n
        assert env.runtime.lookup(env.ibs, QUERY, 5, _xpx(xpx_k_colors=1)).explanation is not None
    finally:
        model.backbone.blocks[0].requires_grad_(True)


# ------------------------------------------------------------------------------------------ 8
def _artifact_files(root: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted((root / "artifacts" / "artifacts").rglob("*")):
        if not path.is_file():
            continue
        rel = str(path.relative_to(root))
        if path.name == "explanation.json":
            doc = json.loads(path.read_text())
            doc.pop("created_at", None)
            out[rel] = json.dumps(doc, sort_keys=True).encode()
        else:
            out[rel] = path.read_bytes()
    return out


def test_checklist_08_two_threads_on_one_model_match_sequential_bytes(env, tmp_path):
    from wbia_pairx.runtime import WbiaPairx
    from wbia_pairx.selection import Candidate

    xpx = _xpx(xpx_k_colors=1)
    work = [[Candidate(2, 1, 0, 0.9)], [Candidate(3, 5, 0, 0.9)]]

    sequential = WbiaPairx(miewid.read_config_and_load_model, store_root=tmp_path / "seq")
    sequential.models = env.runtime.models  # the very same model instance and lock
    for item in work:
        sequential.explain_candidates(env.ibs, item, xpx)

    threaded = WbiaPairx(miewid.read_config_and_load_model, store_root=tmp_path / "thr")
    threaded.models = env.runtime.models
    cached = env.runtime.models.get("sea_turtle")
    assert env.runtime.models.get("turtle_green") is cached  # qaid 2's species: same model
    holders, overlaps = [], []
    import wbia_pairx.runtime as runtime_module

    real_model_lock = runtime_module.model_lock
    real_lock = real_model_lock(cached.model)

    class WatchingLock:
        def __enter__(self):
            real_lock.acquire()
            holders.append(1)
            overlaps.append(len(holders))

        def __exit__(self, *exc):
            holders.pop()
            real_lock.release()

    watching = WatchingLock()
    runtime_module.model_lock = lambda model: watching if model is cached.model else real_model_lock(model)
    errors = []
    barrier = threading.Barrier(2)

    def run(item):
        try:
            barrier.wait()
            threaded.explain_candidates(env.ibs, item, xpx)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=run, args=(item,)) for item in work]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        runtime_module.model_lock = real_model_lock
    assert not errors
    assert overlaps == [1, 1]  # serialised: never two explanations at once on one model
    seq_files = _artifact_files(tmp_path / "seq")
    thr_files = _artifact_files(tmp_path / "thr")
    assert len(seq_files) >= 4 and seq_files.keys() == thr_files.keys()
    for rel in seq_files:
        assert seq_files[rel] == thr_files[rel], rel


# ------------------------------------------------------------------------------------------ 9
def test_checklist_09_postprocess_returns_same_objects_byte_identical(baseline, hooked):
    qreq_ = hooked["qreq"]
    returned = hooked["cm_list"]
    assert returned is qreq_.host_returned  # the very list the host built ...
    assert all(a is b for a, b in zip(returned, qreq_.host_returned_items))  # ... same objects, order
    assert len(returned) == len(baseline) == 1
    for cm, base in zip(returned, baseline):
        for field in SCORE_FIELDS:
            got, want = getattr(cm, field), getattr(base, field)
            if isinstance(want, np.ndarray):
                assert got.dtype == want.dtype and got.shape == want.shape, field
                assert got.tobytes() == want.tobytes(), field
            else:
                assert got == want, field
        assert cm.model_url == base.model_url and cm.config_url == base.config_url


# ------------------------------------------------------------------------------------------ 10
def _cm(qaid, daids, annot_scores, nids):
    cm = AnnotMatch()
    cm.qaid = qaid
    cm.qnid = 1
    cm.daid_list = np.array(daids, dtype=np.int64)
    cm.dnid_list = np.array(nids, dtype=np.int64)
    cm._update_daid_index()
    cm._update_unique_nid_index()
    scores = np.array(annot_scores, dtype=np.float64)
    cm.set_cannonical_name_score(scores, np.array([scores[g].max() if len(g) else -np.inf for g in cm.name_groupxs]))
    return cm


def test_checklist_10_top_k_selection_skips_self_and_handles_inf_and_empty(env, hooked):
    from wbia_pairx.selection import select_candidates

    cm = _cm(7, [7, 8, 9, 10, 11], [0.99, 0.6, 0.9, 0.8, 0.7], [1, 2, 2, 3, -11])
    by_annot = select_candidates(cm, 3, "annot")
    assert [c.daid for c in by_annot] == [9, 10, 11]  # 7 is the query itself
    assert [c.rank for c in by_annot] == [1, 2, 3] and by_annot[0].score == 0.9
    by_name = select_candidates(cm, 3, "name")
    assert 8 not in [c.daid for c in by_name]  # -inf in score_list: not its name's best
    assert all(np.isfinite(c.score) for c in by_name)
    empty = _cm(7, [], [], [])
    assert select_candidates(empty, 5) == []

    # what the hook explained in the real run: exactly the top 2 by annot_score_list, not the qaid
    cm_run = hooked["cm_list"][0]
    order = np.argsort(-cm_run.annot_score_list, kind="stable")
    expected = [int(cm_run.daid_list[i]) for i in order[:2]]
    explained = [int(d) for d in cm_run.daid_list if env.runtime.lookup(env.ibs, QUERY, int(d), _xpx()) is not None]
    assert set(expected) <= set(explained)

    # the hook on an empty daid_list: nothing to explain, nothing fails, the cm comes back
    with env.plugin.attach(miewid.MiewIdRequest, miewid.MiewIdConfig):
        json_result, cm_list, _ = graph.query_chips_graph(env.ibs, [QUERY], [QUERY], dict(SMALL_XPX))
    assert len(cm_list) == 1 and len(cm_list[0].daid_list) == 0
    entry = next(iter(json_result["cm_dict"].values()))
    assert entry["dannot_uuid_list"] == [] and entry["dannot_extern_list"] == []


# ------------------------------------------------------------------------------------------ 11
def test_checklist_11_standin_copies_cannonical_name_score_quirk(hooked):
    cm = hooked["cm_list"][0]
    assert cm.daid2_idx == {int(d): i for i, d in enumerate(cm.daid_list)}
    assert list(cm.unique_nids) == sorted(set(int(n) for n in cm.dnid_list))
    assert cm.nid2_nidx == {int(n): i for i, n in enumerate(cm.unique_nids)}
    for nidx, groupx in enumerate(cm.name_groupxs):
        scores = cm.annot_score_list[groupx]
        assert cm.name_score_list[nidx] == scores.max()  # MiewID: max per name
        best = groupx[np.argmax(scores)]
        assert cm.score_list[best] == cm.name_score_list[nidx]
        others = [g for g in groupx if g != best]
        assert all(cm.score_list[g] == -np.inf for g in others)
    assert np.isneginf(cm.score_list).sum() == 1  # aids 3 and 5 share name 'b'
    assert list(cm.get_top_aids()) == list(cm.daid_list[np.argsort(-cm.score_list, kind="stable")])


# ------------------------------------------------------------------------------------------ 12
def test_checklist_12_from_dict_cm_finds_artifacts_by_uuid_and_config(env, hooked):
    # the review page reads the stored job result back with ut.from_json (UUIDs restored)
    job_result = controller_inject.from_json(json.dumps(hooked["json"]))
    entry = next(iter(job_result["cm_dict"].values()))
    original = hooked["graph_cms"][0]
    original.xpx_note = "attributes like this do not survive from_dict"
    rebuilt = AnnotMatch.from_dict(entry, ibs=env.ibs)
    assert not hasattr(rebuilt, "xpx_note")
    assert rebuilt.qaid == QUERY and list(rebuilt.daid_list) == [int(d) for d in original.daid_list]
    daid = int(hooked["cm_list"][0].daid_list[np.argmax(hooked["cm_list"][0].annot_score_list)])
    calls = []
    real = env.runtime.explain_candidates
    env.runtime.explain_candidates = lambda *a, **k: calls.append(a) or real(*a, **k)
    try:
        with env.plugin.attach(miewid.MiewIdRequest, miewid.MiewIdConfig):
            # WBIA's review page: a new request for just this pair, and the rebuilt cm
            qreq_ = graph.new_query_request(env.ibs, [QUERY], [daid], dict(SMALL_XPX))
            from_rebuilt = qreq_.render_single_result(rebuilt, daid, heatmask=True)
            from_original = hooked["graph_qreq"].render_single_result(original, daid, heatmask=True)
    finally:
        env.runtime.explain_candidates = real
    assert calls == []  # found in the index, not recomputed
    np.testing.assert_array_equal(from_rebuilt, from_original)


# ------------------------------------------------------------------------------------------ 13
@pytest.mark.parametrize("use_gradcam", [False, True])
def test_checklist_13_render_is_bgr_uint8_and_survives_jpeg_round_trip(env, hooked, use_gradcam):
    cm = hooked["graph_cms"][0]
    qreq_ = hooked["graph_qreq"]
    daid = int(cm.daid_list[np.argmax(cm.annot_score_list)])
    entry = env.runtime.lookup(env.ibs, QUERY, daid, _xpx())
    versions = {"heatmask": dict(heatmask=True), "matches": dict(draw_fmatches=True, show_matches=True), "clean": {}}
    panels = {"heatmask": "composite", "matches": "only_lines", "clean": "only_colors"}
    with env.plugin.attach(miewid.MiewIdRequest, miewid.MiewIdConfig):
        for version, flags in versions.items():
            image = qreq_.render_single_result(cm, daid, use_gradcam=use_gradcam, **flags)
            assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            assert image.shape[2] == 3
            png = (env.root / "pairx" / "artifacts" / entry.explanation.images[panels[version]]).read_bytes()
            stored_rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
            np.testing.assert_array_equal(image, stored_rgb[:, :, ::-1])  # BGR of the stored picture
    # the thumbnail files query_chips_graph wrote, served by the thumb route (BGR->RGB, JPEG q=100)
    quuid = env.ibs.get_annot_uuids(QUERY)
    ref = hooked["json"]["cm_dict"][str(quuid)]["dannot_extern_reference"]
    for version in ("heatmask", "matches", "clean"):
        jpeg = graph.match_thumb(env.ibs, ref, quuid, env.ibs.get_annot_uuids(daid), version)
        served = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).astype(float)
        png = (env.root / "pairx" / "artifacts" / entry.explanation.images[panels[version]]).read_bytes()
        truth = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(float)
        assert served.shape == truth.shape
        assert np.abs(served - truth).mean() < 4.0, version
        # on the coloured pixels (red and blue far apart) the channel order decides everything
        coloured = np.abs(truth[:, :, 0] - truth[:, :, 2]) > 20
        assert coloured.sum() > 100, version
        right = np.abs(served - truth)[coloured].mean()
        swapped = np.abs(served - truth[:, :, ::-1])[coloured].mean()
        assert right < 6.0 and swapped > 3 * right and swapped > 10.0, (version, right, swapped)


# ------------------------------------------------------------------------------------------ 14
def test_checklist_14_json_result_keeps_wbia_shape_refs_are_additive(env, hooked):
    from wbia_pairx.json_result import REFS_KEY, with_explanation_refs

    json_result = hooked["json"]
    ((quuid, entry),) = json_result["cm_dict"].items()
    assert set(entry) == graph.CM_DICT_KEYS | graph.OPTIONAL_CM_DICT_KEYS
    assert entry["qannot_uuid"] == {"__UUID__": quuid}
    assert all(set(u) == {"__UUID__"} for u in entry["dannot_uuid_list"])
    assert isinstance(entry["annot_score_list"], list) and isinstance(entry["score_list"], list)
    assert len(entry["dannot_extern_list"]) == len(entry["dannot_uuid_list"]) == 4
    assert all(v in (True, False, "error") for v in entry["dannot_extern_list"])
    assert entry["dannot_extern_list"].count(True) == 3  # n=3 thumbnails, all PAIR-X, none failed

    xpx = _xpx()

    def lookup(q, d):
        qaid = env.ibs.get_annot_aids_from_uuid(uuid.UUID(q))
        daid = env.ibs.get_annot_aids_from_uuid(uuid.UUID(d))
        return env.runtime.lookup(env.ibs, qaid, daid, xpx)

    extended = with_explanation_refs(json_result, lookup)
    assert set(extended) == set(json_result) | {REFS_KEY}
    assert extended["cm_dict"] == json_result["cm_dict"]
    refs = extended[REFS_KEY]
    assert refs["version"] == 1
    aligned = refs["by_query"][quuid]
    assert len(aligned) == len(entry["dannot_uuid_list"])
    for ref, duuid in zip(aligned, entry["dannot_uuid_list"]):
        if ref is not None:
            assert ref["database_uuid"] == duuid["__UUID__"]
    assert sum(r is not None and "explanation" in r for r in aligned) == 3
    json.dumps(extended)  # still plain JSON


# ------------------------------------------------------------------------------------------ 15
def test_checklist_15_explanation_failure_never_loses_or_changes_a_match(env, baseline):
    bad = dict(SMALL_XPX, xpx_layer_key="backbone.blocks.99")  # no such layer: every pair fails
    with env.plugin.attach(miewid.MiewIdRequest, miewid.MiewIdConfig):
        json_result, cm_list, _ = graph.query_chips_graph(env.ibs, [QUERY], DAIDS, bad, n=2)
    for field in SCORE_FIELDS:
        got, want = getattr(cm_list[0], field), getattr(baseline[0], field)
        if isinstance(want, np.ndarray):
            assert got.tobytes() == want.tobytes(), field
    entry = next(iter(json_result["cm_dict"].values()))
    assert entry["dannot_extern_list"].count("error") == 2  # rendered thumbnails: error marker
    assert entry["annot_score_list"] == list(baseline[0].annot_score_list)
    from wbia_pairx.config import XpxConfig

    top = int(baseline[0].daid_list[np.argmax(baseline[0].annot_score_list)])
    stored = env.runtime.lookup(env.ibs, QUERY, top, XpxConfig(**bad))
    assert stored.explanation is None
    assert "backbone.blocks.99" in stored.explanation_error.message


# ------------------------------------------------------------------------------------------ 16
def test_checklist_16_config_class_drops_unknown_keys_and_cfgstr_covers_picture_keys(env):
    from wbia_pairx.config import XPX_PARAMS, XpxConfig

    config = XpxConfig(xpx_k_colors=3, pipeline_root="MiewId", use_gradcam=True, pairx_layer_key="x")
    assert config.xpx_k_colors == 3
    assert not hasattr(config, "pipeline_root") and not hasattr(config, "use_gradcam")
    ours = {p.name for p in XPX_PARAMS}
    miew = {p.varname for p in miewid.MiewIdConfig._param_info_list}
    assert not ours & miew and not any(n.startswith("pairx_") for n in ours)
    changed = {
        "xpx_enabled": False,
        "xpx_top_k": 9,
        "xpx_score": "name",
        "xpx_layer_key": "backbone.blocks.5",
        "xpx_k_lines": 7,
        "xpx_k_colors": 4,
        "xpx_mode": "parity",
        "xpx_channel_order": "rgb",
        "xpx_rerank": True,
        "xpx_rerank_k": 3,
        "xpx_rerank_alpha": 0.5,
        "xpx_rerank_score": "mc",
    }  # H6
    base = XpxConfig().get_cfgstr()
    for param in XPX_PARAMS:
        if param.in_cfgstr:
            assert XpxConfig(**{param.name: changed[param.name]}).get_cfgstr() != base, param.name
    # attached to MiewID, the request cfgstr (WBIA's thumbnail cache key) changes with our keys
    saved = list(miewid.MiewIdConfig._param_info_list)
    with env.plugin.attach(miewid.MiewIdRequest, miewid.MiewIdConfig):
        a = graph.new_query_request(env.ibs, [1], [2], {"xpx_k_colors": 2}).get_cfgstr()
        b = graph.new_query_request(env.ibs, [1], [2], {"xpx_k_colors": 3}).get_cfgstr()
        assert a != b
        with pytest.raises(ConfigError, match="xpx_k_colors"):
            XpxConfig(xpx_k_colors=0).validated()
    assert miewid.MiewIdConfig._param_info_list == saved  # detached: the host class is as it was
    assert (
        graph.new_query_request(env.ibs, [1], [2], {"xpx_k_colors": 2}).get_cfgstr()
        == graph.new_query_request(env.ibs, [1], [2], {"xpx_k_colors": 3}).get_cfgstr()
    )


# ------------------------------------------------------------------------------------------ 17
def test_checklist_17_pairwise_table_registration_and_generator(env, hooked):
    from wbia_pairx.depc_table import TABLENAME

    regs = [r for r in controller_inject.PREPROC_REGISTRATIONS if r[1]["tablename"] == TABLENAME]
    kind, reg, func = regs[-1]
    assert kind == "annot"
    assert reg["parents"] == ["annotations", "annotations"]
    assert "MiewId" not in reg["parents"]
    assert reg["coltypes"][0][0] == "extern" and reg["rm_extern_on_delete"] is True
    assert reg["fname"] and issubclass(reg["configclass"], dtool.Config)
    declared = {p.varname for p in reg["configclass"]._param_info_list}
    assert {"xpx_k_colors", "xpx_layer_key", "xpx_channel_order"} <= declared
    assert inspect.isgeneratorfunction(func)

    cm = hooked["cm_list"][0]
    top2 = [int(cm.daid_list[i]) for i in np.argsort(-cm.annot_score_list, kind="stable")[:2]]
    pairs = [(QUERY, top2[1]), (QUERY, QUERY), (QUERY, top2[0])]
    table = env.ibs.depc_annot[TABLENAME]
    config = reg["configclass"](**SMALL_XPX)
    rows = table.get_row_data(table.get_rowid(pairs, config=config))
    assert len(rows) == 3
    for (qaid, daid), (image, text) in zip(pairs, rows):
        doc = json.loads(text)
        if qaid == daid:
            assert image is None and doc["error"]["type"] == "InvalidInputError"
            continue
        assert doc["daid"] == daid and doc["qaid"] == qaid  # input order kept
        expected = env.runtime.render(env.ibs, qaid, daid, "heatmask", _xpx())
        np.testing.assert_array_equal(image, expected)


# ------------------------------------------------------------------------------------------ 18
def test_checklist_18_web_endpoints_have_legal_rules_envelope_and_image_bytes(env, hooked):
    api = [r for r, (_, _, m) in controller_inject.API_RULES.items() if m == "wbia_pairx._plugin"]
    routes = [r for r, (_, _, m) in controller_inject.ROUTE_RULES.items() if m == "wbia_pairx._plugin"]
    assert api == ["/api/plugin/pairx/explanation/"] and routes == ["/plugin/pairx/image/"]
    for rule in api:
        assert rule.endswith("/") and "_" not in rule and "-" not in rule and "s/" not in rule
    with pytest.raises(controller_inject.RuleError):  # the stand-in's checks are real
        controller_inject.get_wbia_flask_api("x")("/api/plugin/pairx_bad/")

    cm = hooked["cm_list"][0]
    daid = int(cm.daid_list[np.argmax(cm.annot_score_list)])
    quuid, duuid = env.ibs.get_annot_uuids(QUERY), env.ibs.get_annot_uuids(daid)
    reply = controller_inject.call_api(
        env.ibs,
        "/api/plugin/pairx/explanation/",
        query={
            "query_annot_uuid": json.dumps(str(quuid)),
            "database_annot_uuid": json.dumps(str(duuid)),
            "query_config_dict": json.dumps(SMALL_XPX),
        },
    )
    assert set(reply) == {"status", "response"} and reply["status"]["success"] is True
    assert reply["response"]["version"] == 1
    ref = reply["response"]["entry"]["explanation"]
    assert ref["artifact_id"] and "composite" in ref["images"]
    bad = controller_inject.call_api(
        env.ibs, "/api/plugin/pairx/explanation/", query={"query_annot_uuid": '"nope"', "database_annot_uuid": '"x"'}
    )
    assert bad["status"]["success"] is False and "nope" in bad["status"]["message"]

    png = controller_inject.call_route(
        env.ibs, "/plugin/pairx/image/", qaid=QUERY, daid=daid, version="heatmask", query_config_dict=SMALL_XPX
    )
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    served = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    stored = (env.root / "pairx" / "artifacts" / ref["images"]["composite"]).read_bytes()
    np.testing.assert_array_equal(served, np.asarray(Image.open(io.BytesIO(stored)).convert("RGB")))
