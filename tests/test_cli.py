"""The pairx-plugin CLI: help, version, layers, explain (in-process and as a subprocess), plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pairx_plugin import cli
from pairx_plugin.artifacts.store import ArtifactStore, read_manifest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def turtles(seaturtle_dir) -> dict[str, str]:
    images = seaturtle_dir / "images"
    return {
        "a1": str(images / "identity_a" / "image_1.JPG"),
        "a2": str(images / "identity_a" / "image_2.JPG"),
        "b3": str(images / "identity_b" / "image_3.JPG"),
    }


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# --------------------------------------------------------------------------- help and version


@pytest.mark.parametrize("argv", [["--help"], ["explain", "--help"], ["layers", "--help"]])
def test_help_on_every_command(argv, capsys):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pairx-plugin")
    assert "--model" in out or argv == ["--help"]


def test_top_level_help_lists_the_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "explain" in out and "layers" in out


def test_version(capsys):
    from pairx_plugin import __version__

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"pairx-plugin {__version__}"


def test_no_command_and_unknown_options_are_usage_errors(capsys):
    assert cli.main([]) == 2
    assert "usage: pairx-plugin" in capsys.readouterr().err
    assert cli.main(["explain"]) == 2  # IMG_A and IMG_B missing
    assert "IMG_A" in capsys.readouterr().err
    assert cli.main(["explain", "a.jpg", "b.jpg", "--k-lines", "0"]) == 2
    assert "--k-lines" in capsys.readouterr().err


# --------------------------------------------------------------------------- layers


def test_layers_table_marks_the_default(capsys, lite0_imagenet):
    from pairx_plugin.engine.layers import default_layer_key, list_layers

    assert cli.main(["layers", "--size", "160"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("efficientnet_lite0_imagenet at 160x160")
    rows = [line.split() for line in lines[2:]]
    marked = [row[1] for row in rows if row[0] == "*"]
    assert marked == [default_layer_key(lite0_imagenet, 160)]
    infos = {info.key: info for info in list_layers(lite0_imagenet, 160)}
    assert len(rows) == len(infos)
    for line in lines[2:]:
        key = line[3:].split()[0]
        shape = "(" + ", ".join(str(v) for v in infos[key].output_shape) + ")"
        assert shape in line and infos[key].module_type in line


def test_layers_of_a_model_without_feature_maps(tmp_path, monkeypatch, capsys):
    (tmp_path / "h2_flat_models.py").write_text(
        textwrap.dedent("""
        from torch import nn

        def pooled_only():
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

        def small_cnn():
            return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert cli.main(["layers", "--model", "h2_flat_models:pooled_only", "--size", "64"]) == 2
        line = one_line_error(capsys.readouterr().err)
        assert "h2_flat_models:pooled_only" in line and "no layer" in line
        assert cli.main(["layers", "--model", "h2_flat_models:small_cnn", "--size", "64"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert any(row.startswith("*") and "(4, 31, 31)" in row for row in out)
    finally:
        sys.modules.pop("h2_flat_models", None)


def test_layers_bad_model_spec(capsys):
    assert cli.main(["layers", "--model", "timm:no_such_net_xyz"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert line.startswith("pairx-plugin: error: model spec 'timm:no_such_net_xyz'")


# --------------------------------------------------------------------------- explain, in process


@pytest.fixture(scope="module")
def explained(turtles, tmp_path_factory):
    """One real `explain` run (built-in model, real engine) shared by the checks below."""
    out = tmp_path_factory.mktemp("cli_explain") / "store"
    argv = [
        "explain",
        turtles["a1"],
        turtles["a2"],
        "--out",
        str(out),
        "--layer",
        "blocks.3",
        "--layer",
        "blocks.5",
        "--k-lines",
        "6",
        "--k-colors",
        "3",
        "--device",
        "cpu",
        "--no-progress",
    ]
    return argv, out


@pytest.mark.slow
def test_explain_writes_artifacts_and_prints_one_summary_line(explained, capsys):
    argv, out = explained
    assert cli.main(argv) == 0
    stdout = capsys.readouterr().out.strip().splitlines()
    assert len(stdout) == 1
    line = stdout[0]
    assert line.startswith("cosine ") and " layer blocks.3 " in line and " IRM " in line and " MC " in line
    composite = Path(line.split(" composite ", 1)[1].split("  (", 1)[0])
    assert composite.is_file() and composite.is_relative_to(out)
    with Image.open(composite) as image:
        assert image.size == (448, 448)
    store = ArtifactStore(out)
    assert line.endswith("(+ layers blocks.5)")
    artifacts = {store.load(identifier).layer: store.load(identifier) for identifier in store.artifact_ids()}
    assert sorted(artifacts) == ["blocks.3", "blocks.5"]
    artifact = artifacts["blocks.3"]
    artifact_id = artifact.artifact_id
    assert store.has(artifact_id) and store.has(artifacts["blocks.5"].artifact_id)
    assert composite.parent.name == artifact_id
    assert artifact.layer == "blocks.3" and 0 < len(artifact.matches) <= 6
    assert artifact.settings.k_lines == 6 and artifact.settings.k_colors == 3
    assert f"matches {artifact.metrics.match_count} " in line
    assert f"cosine {artifact.cosine:.4f} " in line
    assert [f.role for f in artifact.files] == ["pair_data"]  # compact (1.2): panels drawn into rendered/
    rendered = {p.stem for p in composite.parent.glob("*.png")}
    assert {"composite", "only_lines", "only_colors", "overlay_heatmap_query", "display_pair"} <= rendered
    [manifest] = list((out / "runs").glob("*.jsonl"))
    [entry] = read_manifest(manifest)
    assert entry.status == "explained" and entry.record.query_id == argv[1]

    # a second run is a cache hit on the same artifact
    assert cli.main(argv) == 0
    again = capsys.readouterr().out.strip()
    assert again.endswith("(cached)  (+ layers blocks.5)") and str(composite) in again
    assert sorted(store.artifact_ids()) == sorted(a.artifact_id for a in artifacts.values())


def test_explain_missing_and_broken_files(turtles, tmp_path, capsys):
    out = tmp_path / "store"
    missing = tmp_path / "no_such.jpg"
    assert cli.main(["explain", str(missing), turtles["a2"], "--out", str(out)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "no_such.jpg" in line and "not found" in line
    truncated = tmp_path / "half.jpg"
    data = Path(turtles["a2"]).read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    assert cli.main(["explain", turtles["a1"], str(truncated), "--out", str(out)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "half.jpg" in line and "truncated" in line
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((1, 1, 3), dtype=np.uint8)).save(tiny)
    assert cli.main(["explain", str(tiny), turtles["a2"], "--out", str(out)]) == 2
    assert "too small" in one_line_error(capsys.readouterr().err)
    assert not out.exists()  # nothing written for bad input


def test_explain_bad_options(turtles, tmp_path, capsys):
    config = tmp_path / "pairx.yaml"
    config.write_text("pairx:\n  k_lines: 5\n  colour: red\n")
    assert (
        cli.main(["explain", turtles["a1"], turtles["a2"], "--config", str(config), "--out", str(tmp_path / "o")]) == 2
    )
    line = one_line_error(capsys.readouterr().err)
    assert "pairx.colour" in line and "unknown key" in line
    assert cli.main(["explain", turtles["a1"], turtles["a2"], "--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in one_line_error(capsys.readouterr().err)
    assert cli.main(["explain", turtles["a1"], turtles["a2"], "--model", "nope"]) == 2
    assert "model spec 'nope'" in one_line_error(capsys.readouterr().err)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert cli.main(["explain", turtles["a1"], turtles["a2"], "--out", str(blocker)]) == 2
    assert "a_file" in one_line_error(capsys.readouterr().err)


def test_explain_bad_device(turtles, tmp_path, capsys):
    assert cli.main(["explain", turtles["a1"], turtles["a2"], "--device", "banana"]) == 2
    assert "--device" in capsys.readouterr().err
    assert cli.main(["explain", turtles["a1"], turtles["a2"], "--device", "cuda:99", "--out", str(tmp_path / "o")]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "--device: 'cuda:99'" in line and ("not available" in line or "GPU(s)" in line)
    assert cli.main(["layers", "--device", "cuda:99"]) == 2
    assert "--device: 'cuda:99'" in one_line_error(capsys.readouterr().err)


def test_explain_unknown_layer(turtles, tmp_path, capsys):
    code = cli.main(
        ["explain", turtles["a1"], turtles["a2"], "--layer", "blocks.99", "--out", str(tmp_path / "o"), "--no-progress"]
    )
    assert code == 2
    line = one_line_error(capsys.readouterr().err)
    assert "blocks.99" in line


# --------------------------------------------------------------------------- plugins


@pytest.fixture()
def plugin_module(tmp_path, monkeypatch):
    (tmp_path / "h2_cli_plugins.py").write_text(
        textwrap.dedent("""
        def register_hello(subparsers):
            parser = subparsers.add_parser("hello", help="say hello")
            parser.add_argument("--who", default="world")
            parser.set_defaults(handler=lambda args: print(f"hello {args.who}") or 0)

        def register_raises(subparsers):
            raise RuntimeError("plugin bug")
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "h2_cli_plugins"
    sys.modules.pop("h2_cli_plugins", None)


def test_entry_point_commands_and_broken_plugins(plugin_module, monkeypatch, capsys):
    group = cli.ENTRY_POINT_GROUP
    points = [
        metadata.EntryPoint(name="hello", value=f"{plugin_module}:register_hello", group=group),
        metadata.EntryPoint(name="missing", value="h2_no_such_plugin_module:register", group=group),
        metadata.EntryPoint(name="raises", value=f"{plugin_module}:register_raises", group=group),
    ]
    monkeypatch.setattr(cli, "discover_entry_points", lambda: points)
    assert cli.main(["hello", "--who", "turtle"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "hello turtle"
    warnings = [line for line in captured.err.splitlines() if line]
    assert len(warnings) == 2
    assert "'missing'" in warnings[0] and "skipped" in warnings[0]
    assert "'raises'" in warnings[1] and "plugin bug" in warnings[1]
    assert cli.main(["--help"]) == 0
    assert "hello" in capsys.readouterr().out


def test_missing_builtin_module_is_skipped_quietly(monkeypatch, capsys):
    monkeypatch.setattr(cli, "BUILTIN_COMMANDS", ("explain", "layers", "h2_not_written_yet"))
    monkeypatch.setattr(cli, "discover_entry_points", lambda: [])
    assert cli.main(["--help"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "layers" in captured.out


# --------------------------------------------------------------------------- as a real process


def _run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "adapters"), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "pairx_plugin.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_python_m_explain_subprocess(turtles, tmp_path):
    done = _run_module(
        "explain", turtles["a1"], turtles["b3"], "--k-colors", "2", "--k-lines", "5", "--no-progress", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith("cosine ") and "composite pairx_out" in line  # default --out, relative
    store_root = tmp_path / "pairx_out"
    [artifact_dir] = list((store_root / "artifacts").glob("??/*"))
    document = json.loads((artifact_dir / "explanation.json").read_text())
    for entry in document["files"]:
        assert (artifact_dir / entry["name"]).is_file()
    rendered = store_root / "rendered" / artifact_dir.parent.name / artifact_dir.name  # drawn on demand
    assert (rendered / "composite.png").is_file()
    assert (rendered / "overlay_lines_pair.png").is_file()
    assert document["query_id"] == turtles["a1"] and document["candidate_id"] == turtles["b3"]
    assert len(list((store_root / "runs").glob("*.jsonl"))) == 1

    failed = _run_module("explain", str(tmp_path / "missing.jpg"), turtles["b3"], cwd=tmp_path)
    assert failed.returncode == 2
    assert "missing.jpg" in one_line_error(failed.stderr)
    assert failed.stdout == ""
