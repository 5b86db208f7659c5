"""JSON Schemas: checked-in files equal the generated ones; real artifacts and manifests validate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import pytest
import torch

from pairx_plugin.artifacts.export_schema import main as export_main
from pairx_plugin.artifacts.export_schema import stale_files
from pairx_plugin.artifacts.schema import SCHEMA_VERSION, ExplanationArtifact, ManifestEntry, json_schemas
from pairx_plugin.artifacts.store import ArtifactStore, read_manifest
from pairx_plugin.config import ALL_PANELS, PairXConfig
from pairx_plugin.hook import explain_matches
from pairx_plugin.records import MatchRecord

REPO = Path(__file__).resolve().parents[1]
SCHEMA_DIR = REPO / "docs" / "schema"


def _load(name: str) -> dict:
    return json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))


def test_checked_in_schemas_equal_the_generated_ones():
    assert stale_files(SCHEMA_DIR) == []
    for name, schema in json_schemas().items():
        assert _load(name) == schema
        jsonschema.Draft202012Validator.check_schema(schema)


def test_export_check_flags_a_stale_file_and_regenerates_it(tmp_path, capsys):
    assert export_main(["--dir", str(tmp_path)]) == 0
    assert export_main(["--dir", str(tmp_path), "--check"]) == 0
    path = tmp_path / "explanation_artifact.schema.json"
    path.write_text(path.read_text().replace('"matches"', '"hits"'))
    assert export_main(["--dir", str(tmp_path), "--check"]) == 1
    assert "stale: " in capsys.readouterr().out
    (tmp_path / "manifest_entry.schema.json").unlink()
    assert sorted(stale_files(tmp_path)) == ["explanation_artifact.schema.json", "manifest_entry.schema.json"]


def test_schema_version_is_semver_and_in_the_schema_id():
    major, minor, patch = (int(part) for part in SCHEMA_VERSION.split("."))
    assert major >= 1 and minor >= 0 and patch >= 0
    assert _load("explanation_artifact.schema.json")["$id"].endswith(SCHEMA_VERSION)


@pytest.fixture(scope="module")
def real_artifact(tmp_path_factory, seaturtle_dir, lite0_imagenet):
    """One real pair (identity a, image 1 vs 2) through the hook with every panel and the raw arrays."""
    from pairx_plugin.images import FileImageSource
    from pairx_plugin.pretrained import IMAGENET_MEAN, IMAGENET_STD

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("schema_store")
    images = seaturtle_dir / "images" / "identity_a"
    source = FileImageSource(
        {"a1": images / "image_1.JPG", "a2": images / "image_2.JPG"}, 224, IMAGENET_MEAN, IMAGENET_STD
    )
    records = [
        MatchRecord(query_id="a1", candidate_id="a2", rank=0, score=float("-inf"), extras={"db": "turtles"}),
        MatchRecord(query_id="a1", candidate_id="a9", rank=1, score=0.5),  # no such image: an error line
    ]
    config = PairXConfig(k_colors=3, keep_arrays=True, render=list(ALL_PANELS))
    out = explain_matches(
        records=records,
        images=source,
        model=lite0_imagenet,
        config=config,
        store=ArtifactStore(root),
        progress=False,
        run_name="schema",
    )
    return root, out


def test_real_artifact_validates_against_the_checked_in_schema(real_artifact):
    root, out = real_artifact
    ref = out[0].explanation
    assert ref is not None, out[0].explanation_error
    document = json.loads((root / ref.json_path).read_text(encoding="utf-8"))
    jsonschema.validate(document, _load("explanation_artifact.schema.json"))
    assert document["schema_version"] == SCHEMA_VERSION and document["score"] == "-Infinity"
    assert math.isinf(ExplanationArtifact.model_validate(document).score)
    roles = {f["role"] for f in document["files"]}
    assert {
        "composite",
        "only_lines",
        "only_colors",
        "heatmap_query",
        "heatmap_candidate",
        "overlay_heatmap_query",
        "overlay_colors_candidate",
        "display_query",
        "arrays",
        "pair_data",
    } <= roles
    for side in ("query", "candidate"):  # 1.1: the display image is also stored once, shared
        shared = document[side]["display_file"]
        assert (root / shared["path"]).is_file() and shared["path"].endswith(shared["sha256"] + ".png")
    from importlib.metadata import version

    assert document["versions"]["torch"] == version("torch") and document["versions"]["zennit"] == version("zennit")
    assert document["query"]["display_width"] == 518 and document["query"]["input_width"] == 224


def test_real_manifest_lines_validate(real_artifact):
    root, out = real_artifact
    schema = _load("manifest_entry.schema.json")
    lines = (root / "runs" / "schema.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    for line in lines:
        jsonschema.validate(json.loads(line), schema)
    entries = read_manifest(root / "runs" / "schema.jsonl")
    statuses = {e.record.candidate_id: e.status for e in entries}
    assert statuses == {"a2": "explained", "a9": "error"}


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda d: d.pop("metrics"), "metrics"),
        (lambda d: d.update(model_fingerprint="not-a-hash"), "model_fingerprint"),
        (lambda d: d["files"][0].update(sha256="0" * 63), "sha256"),
        (lambda d: d["files"][0].update(name="../escape.png"), "name"),
        (lambda d: d.update(surprise=1), "surprise"),
        (lambda d: d.update(score="very high"), "score"),
        (lambda d: d["matches"][0].update(query_cell=[1]), "query_cell"),
        (lambda d: d.update(rank=-1), "rank"),
    ],
)
def test_schema_rejects_broken_documents(real_artifact, change, path):
    root, out = real_artifact
    document = json.loads((root / out[0].explanation.json_path).read_text(encoding="utf-8"))
    change(document)
    with pytest.raises(jsonschema.ValidationError) as info:
        jsonschema.validate(document, _load("explanation_artifact.schema.json"))
    where = " ".join(str(part) for part in info.value.absolute_path) + " " + info.value.message
    assert path in where


def test_manifest_entry_model_and_schema_agree_on_non_finite_scores():
    record = MatchRecord(query_id="q", candidate_id="c", rank=0, score=float("nan"))
    entry = ManifestEntry(run_name="r", index=0, status="not_explained", record=record)
    payload = json.loads(entry.model_dump_json())
    jsonschema.validate(payload, _load("manifest_entry.schema.json"))
    assert payload["record"]["score"] == "NaN"
