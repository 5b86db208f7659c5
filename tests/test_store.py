"""ArtifactStore: content addresses, atomic writes, completeness checks, disk-full and unwritable paths, manifests."""

from __future__ import annotations

import errno
import hashlib
import json

import pytest
import torch

import pairx_plugin.artifacts.store as store_module
from pairx_plugin.artifacts import build_artifact
from pairx_plugin.artifacts.store import (
    ArtifactBlob,
    ArtifactStore,
    artifact_id,
    atomic_write,
    fingerprint_state_dict,
    model_fingerprint_for,
    read_manifest,
)
from pairx_plugin.config import PairXConfig
from pairx_plugin.errors import ArtifactError, InvalidInputError
from pairx_plugin.records import ExplanationErrorInfo, MatchRecord

try:  # the golden-pair builder lives with the hook tests (tests/ is on sys.path under pytest's default mode)
    from test_hook import LAYER, golden_pair
except ImportError:  # tests/ imported as a package
    from tests.test_hook import LAYER, golden_pair

ID_PARTS = dict(
    model_fingerprint="1" * 64, layer=LAYER, config_digest="2" * 64, query_sha256="3" * 64, candidate_sha256="4" * 64
)


@pytest.fixture()
def artifact_and_blobs(golden_dir):
    """A real document and real PNGs built from the golden PAIR-X pair."""
    from pairx_plugin.artifacts.render import render_pair

    pair, query, candidate = golden_pair(golden_dir)
    layer = pair.layers[LAYER]
    config = PairXConfig(k_colors=3, render=["only_lines", "display"], keep_arrays=True)
    rendered = render_pair(
        query.display,
        candidate.display,
        layer,
        pair.query_size,
        pair.candidate_size,
        k_lines=config.k_lines,
        panels=set(config.render),
    )
    identifier = artifact_id(
        **{**ID_PARTS, "query_sha256": query.content_sha256(), "candidate_sha256": candidate.content_sha256()}
    )
    record = MatchRecord(query_id="../../q", candidate_id="c", rank=0, score=float("-inf"))
    return build_artifact(
        artifact_id=identifier,
        record=record,
        pair=pair,
        layer=layer,
        query=query,
        candidate=candidate,
        rendered=rendered,
        config=config,
        config_digest=config.digest(),
        model_fingerprint="1" * 64,
    )


def test_artifact_id_depends_on_every_content_part_and_nothing_else():
    base = artifact_id(**ID_PARTS)
    assert base == artifact_id(**ID_PARTS) and len(base) == 64
    for key in ID_PARTS:
        changed = dict(ID_PARTS, **{key: ID_PARTS[key][:-1] + "9" if key != "layer" else "blocks.5"})
        assert artifact_id(**changed) != base, key
    assert artifact_id(**ID_PARTS, schema_version="2.0.0") != base


def test_write_then_has_and_load(tmp_path, artifact_and_blobs):
    document, blobs = artifact_and_blobs
    store = ArtifactStore(tmp_path)
    assert not store.has(document.artifact_id)
    written = store.write(document, blobs)
    directory = tmp_path / "artifacts" / document.artifact_id[:2] / document.artifact_id
    assert store.artifact_dir(document.artifact_id) == directory
    assert sorted(p.name for p in directory.iterdir()) == sorted([*(b.name for b in blobs), "explanation.json"])
    assert store.has(document.artifact_id)
    for entry in written.files:
        assert hashlib.sha256((directory / entry.name).read_bytes()).hexdigest() == entry.sha256
    assert {f.role for f in written.files} >= {"only_lines", "display_query", "arrays"}
    loaded = store.load(document.artifact_id)
    assert loaded.content_sha256() == written.content_sha256()
    ref = store.ref(loaded)
    assert ref.json_path == f"artifacts/{document.artifact_id[:2]}/{document.artifact_id}/explanation.json"
    assert (tmp_path / ref.images["only_lines"]).is_file()
    assert list(store.artifact_ids()) == [document.artifact_id]
    import numpy as np

    with np.load(directory / "arrays.npz") as arrays:
        assert arrays["pixel_relevance_query"].shape == (3, 224, 224)


def test_content_hash_ignores_the_write_time(tmp_path, artifact_and_blobs):
    document, blobs = artifact_and_blobs
    later = document.model_copy(update={"created_at": document.created_at.replace(year=2031)})
    assert later.content_sha256() == document.content_sha256()
    assert later.model_copy(update={"rank": 3}).content_sha256() != document.content_sha256()


@pytest.mark.parametrize("damage", ["tamper", "delete_png", "delete_json", "corrupt_json", "wrong_id"])
def test_has_is_false_for_incomplete_or_damaged_artifacts(tmp_path, artifact_and_blobs, damage):
    document, blobs = artifact_and_blobs
    store = ArtifactStore(tmp_path)
    store.write(document, blobs)
    directory = store.artifact_dir(document.artifact_id)
    if damage == "tamper":
        (directory / blobs[0].name).write_bytes(b"\x89PNG not really")
    elif damage == "delete_png":
        (directory / blobs[0].name).unlink()
    elif damage == "delete_json":
        (directory / "explanation.json").unlink()
    elif damage == "corrupt_json":
        (directory / "explanation.json").write_text('{"schema_version": ')
    else:
        payload = json.loads((directory / "explanation.json").read_text())
        payload["artifact_id"] = "f" * 64
        (directory / "explanation.json").write_text(json.dumps(payload))
    assert not store.has(document.artifact_id)
    if damage in ("delete_json", "corrupt_json", "wrong_id"):
        with pytest.raises(ArtifactError, match="explanation.json"):
            store.load(document.artifact_id)
    # writing again repairs it
    store.write(document, blobs)
    assert store.has(document.artifact_id)


def test_disk_full_leaves_nothing_half_written(tmp_path, artifact_and_blobs, monkeypatch):
    document, blobs = artifact_and_blobs
    store = ArtifactStore(tmp_path)
    real = store_module._write_bytes
    state = {"calls": 0}

    def fills_up(fd, data):
        state["calls"] += 1
        if state["calls"] == 3:
            real(fd, data[: len(data) // 2])  # part of the file reaches the disk, then it is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(store_module, "_write_bytes", fills_up)
    with pytest.raises(ArtifactError) as info:
        store.write(document, blobs)
    message = str(info.value)
    assert "No space left on device" in message and str(store.artifact_dir(document.artifact_id)) in message
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert not store.has(document.artifact_id)
    directory = store.artifact_dir(document.artifact_id)
    assert [p for p in directory.iterdir()] == []  # earlier files of this attempt removed, no temp file


def test_unwritable_root_raises_naming_the_path(tmp_path, artifact_and_blobs):
    document, blobs = artifact_and_blobs
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ArtifactError, match="exists and is not a directory"):
        ArtifactStore(blocker)
    store = ArtifactStore(blocker / "below")
    with pytest.raises(ArtifactError, match=str(blocker / "below")):
        store.write(document, blobs)


def test_interrupt_during_a_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def interrupted(fd, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module, "_write_bytes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "x.png", b"data")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad_id", ["../../etc", "A" * 64, "abc", "0" * 63 + "/", 5])
def test_artifact_ids_are_validated_before_touching_paths(tmp_path, bad_id):
    with pytest.raises(InvalidInputError, match="64-character lowercase sha256"):
        ArtifactStore(tmp_path).artifact_dir(bad_id)


def test_blob_names_are_checked(tmp_path, artifact_and_blobs):
    document, blobs = artifact_and_blobs
    store = ArtifactStore(tmp_path)
    for name in ["../evil.png", "explanation.json", ".hidden.png", "a/b.png"]:
        with pytest.raises(InvalidInputError, match="is not allowed"):
            store.write(document, [ArtifactBlob(name, "x", "image/png", b"x")])
    with pytest.raises(InvalidInputError, match="repeat"):
        store.write(document, [blobs[0], blobs[0]])
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").rglob("*.png"))


def test_manifest_lines_are_flushed_per_record(tmp_path):
    store = ArtifactStore(tmp_path)
    path = tmp_path / "runs" / "r-1.jsonl"
    records = [MatchRecord(query_id="q\x00", candidate_id=f"c{i}", rank=i, score=float("nan")) for i in range(3)]
    with store.open_run("r-1") as manifest:
        for i, record in enumerate(records):
            if i == 1:
                record = record.with_error(ExplanationErrorInfo(type="KeyError", message="m", stage="load"))
            manifest.append(i, "error" if i == 1 else "not_explained", record)
            assert len(path.read_text(encoding="utf-8").splitlines()) == i + 1  # visible before close
    entries = read_manifest(path)
    assert [e.index for e in entries] == [0, 1, 2] and entries[1].record.explanation_error.stage == "load"
    assert entries[0].record.query_id == "q\x00"
    for line in path.read_text(encoding="utf-8").splitlines():
        json.loads(line)  # strict JSON per line


@pytest.mark.parametrize("name", ["../x", "", ".hidden", "a/b", "x" * 101, "ü"])
def test_run_names_must_be_safe_file_names(tmp_path, name):
    with pytest.raises(InvalidInputError, match="not a safe file name"):
        ArtifactStore(tmp_path).manifest_path(name)


def test_manifest_that_cannot_be_opened_warns_and_keeps_going(tmp_path):
    (tmp_path / "runs").write_text("a file where the runs folder should be")
    store = ArtifactStore(tmp_path)
    with pytest.warns(RuntimeWarning, match="cannot write run manifest"), store.open_run("r") as manifest:
        manifest.append(0, "not_explained", MatchRecord(query_id="q", candidate_id="c", rank=0, score=1))
    assert manifest.error is not None and manifest.lines_written == 0


def test_bad_manifest_line_is_reported_with_its_number(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"not": "an entry"}\n')
    with pytest.raises(ArtifactError, match="line 1"):
        read_manifest(path)


def test_state_dict_fingerprint_tracks_weights(lite0_imagenet):
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 3)
    b = torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    assert fingerprint_state_dict(a) == fingerprint_state_dict(b) == fingerprint_state_dict(a.state_dict())
    with torch.no_grad():
        b.weight[0, 0] += 1e-6
    assert fingerprint_state_dict(a) != fingerprint_state_dict(b)
    with pytest.raises(InvalidInputError, match="state_dict"):
        fingerprint_state_dict(42)
    from pairx_plugin.models import model_fingerprint

    assert model_fingerprint_for(lite0_imagenet) == model_fingerprint(lite0_imagenet)


def test_one_fingerprint_and_default_model_artifact_ids_are_unchanged(lite0_imagenet):
    """fingerprint_state_dict is now model_fingerprint; ids of the built-in model match main before the merge.

    The constants were computed on main (a13f632) with ``models.model_fingerprint``, the fingerprint
    artifact ids have always used, so every stored artifact of the default model keeps its id.
    """
    from pairx_plugin.config import PairXConfig
    from pairx_plugin.models import model_fingerprint

    fingerprint = model_fingerprint(lite0_imagenet)
    assert fingerprint == fingerprint_state_dict(lite0_imagenet) == model_fingerprint_for(lite0_imagenet)
    assert fingerprint == "7c6507e573338f009a74e7292f5ee9d6f46edd81bbc275671b02ac8b96b5a360"
    # schema 1.0.0 inputs (main's default config: every panel, 1.0 digest fields) still give 1.0.0's id
    legacy = PairXConfig(render=["composite", "only_lines", "only_colors", "heatmaps", "overlays", "display"])
    payload = legacy.model_dump(
        mode="json", include={"k_lines", "k_colors", "mode", "backend", "render", "keep_arrays"}
    )
    legacy_digest = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    identifier = artifact_id(
        model_fingerprint=fingerprint,
        layer="blocks.5",
        config_digest=legacy_digest,
        query_sha256="a" * 64,
        candidate_sha256="b" * 64,
        schema_version="1.0.0",
    )
    assert identifier == "cc8200bf8536bc15cbc8f51d07c2034c7256c61d4c61cf69be34e1ee5dc76910"
    # schema 1.2.0 (compact artifacts, display_max_side in the digest; 1.1.0 added evidence) gave new ids on purpose
    fields_1_2 = {"k_lines", "k_colors", "mode", "backend", "render", "keep_arrays", "display_max_side"}
    payload = PairXConfig().model_dump(mode="json", include=fields_1_2)
    digest_1_2 = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    identifier = artifact_id(
        model_fingerprint=fingerprint,
        layer="blocks.5",
        config_digest=digest_1_2,
        query_sha256="a" * 64,
        candidate_sha256="b" * 64,
        schema_version="1.2.0",
    )
    assert identifier == "25cbbb4649d86b69eb833c01278ada7d41479bb87f7deeb357c12fb62f48147e"
    # schema 1.3.0 (curator lines; `lines` in the digest) gives new ids on purpose
    identifier = artifact_id(
        model_fingerprint=fingerprint,
        layer="blocks.5",
        config_digest=PairXConfig().digest(),
        query_sha256="a" * 64,
        candidate_sha256="b" * 64,
    )
    assert identifier != "25cbbb4649d86b69eb833c01278ada7d41479bb87f7deeb357c12fb62f48147e"
    assert identifier == "1398df3e5618ed1225656f28ad39852a65bf55d647d9f4265d572bee233c984c"
