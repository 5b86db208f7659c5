"""Compact artifacts (schema 1.2): shared display images, pair_data.npz, panels drawn on demand,
the display cap, old (1.0) stores still readable, and `pairx-plugin store verify|gc` / `render`."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pairx_plugin.artifacts.compact import PAIR_DATA_NAME, materialize, render_stored
from pairx_plugin.artifacts.maintenance import collect_garbage, verify_store
from pairx_plugin.artifacts.review import read_page_data, write_review_page
from pairx_plugin.artifacts.store import ArtifactStore, read_manifest
from pairx_plugin.cli import main
from pairx_plugin.config import ALL_PANELS, PairXConfig
from pairx_plugin.errors import ConfigError
from pairx_plugin.hook import explain_matches
from pairx_plugin.images import FileImageSource
from pairx_plugin.pretrained import IMAGENET_MEAN, IMAGENET_STD
from pairx_plugin.records import MatchRecord

V1_0_STORE = Path(__file__).parent / "data" / "store_v1_0"  # written by the 1.0.0 code (main before 1.1)
KIB = 1024


def _source(seaturtle_dir: Path, size: int = 224) -> FileImageSource:
    images = seaturtle_dir / "images"
    paths = {
        "a1": images / "identity_a" / "image_1.JPG",
        "a2": images / "identity_a" / "image_2.JPG",
        "b3": images / "identity_b" / "image_3.JPG",
    }
    return FileImageSource(paths, size, IMAGENET_MEAN, IMAGENET_STD)


def _records() -> list[MatchRecord]:
    return [
        MatchRecord(query_id="a1", candidate_id="a2", rank=0, score=0.9),
        MatchRecord(query_id="a1", candidate_id="b3", rank=1, score=0.4),
    ]


def _artifact_bytes(store: ArtifactStore, artifact_id: str) -> int:
    return sum(p.stat().st_size for p in store.artifact_dir(artifact_id).iterdir())


@pytest.fixture(scope="module")
def compact_run(tmp_path_factory, seaturtle_dir, lite0_imagenet):
    """Two sea-turtle records of one query with the default configuration (compact)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("compact")
    store = ArtifactStore(root)
    out = explain_matches(
        records=_records(),
        images=_source(seaturtle_dir),
        model=lite0_imagenet,
        config=PairXConfig(),
        store=store,
        progress=False,
        run_name="compact",
    )
    return store, out


def test_default_artifact_is_compact_and_under_the_size_target(compact_run):
    store, out = compact_run
    assert all(r.explanation is not None for r in out), [r.explanation_error for r in out]
    for record in out:
        document = store.load(record.explanation.artifact_id)
        assert [f.role for f in document.files] == ["pair_data"]  # no PNG of its own
        assert _artifact_bytes(store, document.artifact_id) <= 150 * KIB
        assert document.settings.display_max_side == 1024
        for side in ("query", "candidate"):
            shared = getattr(document, side).display_file
            assert (shared.width, shared.height) == (
                getattr(document, side).display_width,
                getattr(document, side).display_height,
            )
            assert record.explanation.images[f"display_{side}"] == shared.path
    # the query image is stored once for both records: 3 distinct images, 3 shared files
    assert len(list(store.shared_paths())) == 3
    first, second = (store.load(r.explanation.artifact_id) for r in out)
    assert first.query.display_file == second.query.display_file


def _as_seen(image: Image.Image) -> np.ndarray:
    """What a viewer sees: RGBA layers composited over white (colour of near-transparent pixels is moot)."""
    if image.mode == "RGBA":
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image).convert("RGB")
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_panels_drawn_from_stored_data_match_eager_rendering(compact_run, tmp_path, seaturtle_dir, lite0_imagenet):
    store, out = compact_run
    eager_store = ArtifactStore(tmp_path)
    eager = explain_matches(
        records=_records()[:1],
        images=_source(seaturtle_dir),
        model=lite0_imagenet,
        config=PairXConfig(render=list(ALL_PANELS)),
        store=eager_store,
        progress=False,
    )
    eager_doc = eager_store.load(eager[0].explanation.artifact_id)
    drawn = render_stored(store, out[0].explanation.artifact_id, ALL_PANELS)
    roles = {f.role for f in eager_doc.files if f.media_type == "image/png"}
    assert roles == set(drawn)
    for role in sorted(roles):
        entry = eager_doc.file(role)
        expected = _as_seen(Image.open(eager_store.artifact_dir(eager_doc.artifact_id) / entry.name))
        got = _as_seen(Image.open(io.BytesIO(drawn[role].png)))
        assert got.shape == expected.shape, role
        # uint8 pixel maps and float16 relevance: a rounding step at most here and there
        assert np.abs(got - expected).mean() < 1.0, role
        assert np.percentile(np.abs(got - expected), 99) <= 8, role


def test_materialize_caches_panels_and_the_review_page_shows_every_panel(compact_run):
    store, out = compact_run
    identifier = out[0].explanation.artifact_id
    images = materialize(store, identifier, ALL_PANELS)
    assert {
        "composite",
        "only_lines",
        "only_colors",
        "heatmap_query",
        "overlay_lines_pair",
        "overlay_colors_query",
        "display_pair",
        "display_query",
    } <= set(images)
    cached = store.root / images["composite"]
    stamp = cached.stat().st_mtime_ns
    assert materialize(store, identifier, ["composite"])["composite"] == images["composite"]
    assert cached.stat().st_mtime_ns == stamp  # reused, not redrawn
    page = write_review_page(store.root, "compact")
    data = read_page_data(page.read_text(encoding="utf-8"))
    record = data["queries"][0]["records"][0]
    assert {"composite", "only_lines", "overlay_heatmap_query", "overlay_points_candidate", "display_query"} <= set(
        record["files"]
    ) and not record["missing"]
    for href in record["files"].values():
        assert (page.parent / href).resolve().is_file()


def test_display_is_capped_at_display_max_side(tmp_path, lite0_imagenet):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    for name in ("big_1", "big_2"):
        Image.fromarray(rng.integers(0, 255, (1500, 2000, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    source = FileImageSource(
        {"q": tmp_path / "big_1.png", "c": tmp_path / "big_2.png"}, 64, IMAGENET_MEAN, IMAGENET_STD
    )
    store = ArtifactStore(tmp_path / "store")
    out = explain_matches(
        records=[MatchRecord(query_id="q", candidate_id="c", rank=0, score=1.0)],
        images=source,
        model=lite0_imagenet,
        config=PairXConfig(display_max_side=300, k_colors=2, render=["overlays"]),
        store=store,
        progress=False,
    )
    document = store.load(out[0].explanation.artifact_id)
    assert (document.query.display_width, document.query.display_height) == (300, 225)
    assert document.query.display_file.width == 300
    overlay = document.file("overlay_heatmap_query")
    assert (overlay.width, overlay.height) == (300, 225)
    match = document.matches[0]
    assert match.query_display_xy[0] == pytest.approx(match.query_xy[0] * 300 / 64)
    with pytest.raises(ConfigError, match="display_max_side"):
        PairXConfig(display_max_side=0)


def test_a_1_0_store_is_still_readable(tmp_path):
    root = tmp_path / "old"
    shutil.copytree(V1_0_STORE, root)
    store = ArtifactStore(root)
    (entry,) = read_manifest(root / "runs" / "v1_0.jsonl")
    assert entry.schema_version == "1.0.0"
    document = store.load(entry.record.explanation.artifact_id)
    assert document.schema_version == "1.0.0" and document.query.display_file is None
    assert store.has(document.artifact_id)
    # its eagerly rendered panels are what there is; asking for more draws nothing and fails nothing
    images = materialize(store, document.artifact_id, ALL_PANELS)
    assert set(images) == {"composite", "display_query", "display_candidate", "display_pair"}
    assert verify_store(root).ok
    page = write_review_page(root, "v1_0")
    record = read_page_data(page.read_text(encoding="utf-8"))["queries"][0]["records"][0]
    assert "composite" in record["files"] and not record["missing"]


def _copy_store(compact_run, tmp_path: Path) -> ArtifactStore:
    store, _ = compact_run
    root = tmp_path / "copy"
    shutil.copytree(store.root, root, ignore=shutil.ignore_patterns("rendered", "review"))
    return ArtifactStore(root)


def test_verify_finds_damaged_missing_and_corrupt_files(compact_run, tmp_path, capsys):
    store = _copy_store(compact_run, tmp_path)
    assert main(["store", "verify", str(store.root)]) == 0
    assert "OK: 1 run(s), 2 manifest line(s), 2 artifact(s), 3 shared image(s)" in capsys.readouterr().out
    (entry_a, entry_b) = sorted(read_manifest(store.root / "runs" / "compact.jsonl"), key=lambda e: e.index)
    data_path = store.artifact_dir(entry_a.record.explanation.artifact_id) / PAIR_DATA_NAME
    data_path.write_bytes(b"not a zip")
    document_b = store.load(entry_b.record.explanation.artifact_id)
    store.shared_path(document_b.candidate.display_file).unlink()
    report = verify_store(store.root)
    text = "\n".join(report.problems)
    assert not report.ok and "pair_data.npz: sha256" in text and "does not parse" in text
    assert document_b.candidate.display_file.path in text
    assert main(["store", "verify", str(store.root)]) == 1
    assert main(["store", "verify", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_gc_removes_only_what_no_manifest_references(compact_run, tmp_path, capsys):
    store = _copy_store(compact_run, tmp_path)
    entries = sorted(read_manifest(store.root / "runs" / "compact.jsonl"), key=lambda e: e.index)
    materialize(store, entries[1].record.explanation.artifact_id, ["composite"])
    # a second run keeps only the first record; the original run goes away
    kept_line = (store.root / "runs" / "compact.jsonl").read_text(encoding="utf-8").splitlines()
    kept = [line for line in kept_line if json.loads(line)["index"] == 0]
    (store.root / "runs" / "kept.jsonl").write_text(kept[0] + "\n", encoding="utf-8")
    store.remove_run("compact")
    before = sorted(p for p in store.root.rglob("*") if p.is_file())
    assert collect_garbage(store.root).paths == []  # everything is younger than an hour: kept
    report = collect_garbage(store.root, min_age_seconds=0)
    assert sorted(p for p in store.root.rglob("*") if p.is_file()) == before  # dry run
    gone = entries[1].record.explanation.artifact_id
    assert [p.name for p in report.artifacts] == [gone]
    assert len(report.shared_images) == 1 and len(report.rendered) == 1 and report.bytes > 0
    assert main(["store", "gc", str(store.root), "--min-age", "0", "--apply"]) == 0
    assert "removed 1 artifact(s), 1 shared image(s), 1 rendered dir(s)" in capsys.readouterr().out
    assert not store.artifact_dir(gone).exists()
    assert verify_store(store.root).ok and len(list(store.shared_paths())) == 2
    (store.root / "runs" / "broken.jsonl").write_text("{not json\n", encoding="utf-8")
    assert main(["store", "gc", str(store.root), "--min-age", "0"]) == 2
    assert "gc stopped" in capsys.readouterr().err


def test_render_command_draws_panels_of_a_run(compact_run, tmp_path, capsys):
    store = _copy_store(compact_run, tmp_path)
    assert main(["render", str(store.root), "--run", "compact", "--panels", "composite", "heatmaps"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    for line in lines:
        for role in ("composite", "heatmap_query", "heatmap_candidate"):
            path = store.root / line["images"][role]
            assert path.is_file() and Image.open(path).size[0] > 0
    assert main(["render", str(store.root), "--run", "no_such_run"]) == 2
    assert "no manifest" in capsys.readouterr().err
