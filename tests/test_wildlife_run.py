"""``pairx-plugin run --images DIR --metadata CSV [--config FILE] [--out DIR]`` through the CLI core."""

from __future__ import annotations

import json
import re
from importlib import metadata

import pandas as pd
import pytest
import torch

from pairx_plugin.errors import ConfigError
from pairx_wildlife_tools.pipeline import load_run_settings

CONFIG = """
model: builtin
batch_size: 4
data:
  img_load: full
pairx:
  top_k: 1
  k_colors: 1
  render: [composite]
"""


@pytest.fixture()
def cli(monkeypatch):
    from pairx_plugin import cli as core

    points = [
        metadata.EntryPoint(name=n, value=f"pairx_wildlife_tools.commands:register_{n}", group=core.ENTRY_POINT_GROUP)
        for n in ("run", "demo")
    ]
    monkeypatch.setattr(core, "discover_entry_points", lambda: points)
    return core.main


@pytest.mark.slow
def test_run_explains_the_split_and_writes_manifest_and_review(cli, seaturtle_dir, tmp_path, capsys):
    torch.set_num_threads(1)
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "out"
    code = cli(
        [
            "run",
            "--images",
            str(seaturtle_dir),
            "--metadata",
            str(seaturtle_dir / "metadata.csv"),
            "--config",
            str(config),
            "--out",
            str(out),
            "--run-name",
            "turtles",
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    lines = [json.loads(line) for line in (out / "runs" / "turtles.jsonl").read_text().splitlines()]
    # the CSV's split column: test rows query the train rows, one explained match each
    assert sorted(e["record"]["query_id"] for e in lines) == ["image_2", "image_4"]
    assert {e["record"]["candidate_id"] for e in lines} <= {"image_1", "image_3"}
    assert all(e["status"] == "explained" for e in lines)
    from pairx_plugin.artifacts.review import read_page_data

    data = read_page_data((out / "review" / "turtles.html").read_text())
    assert sum(len(q["records"]) for q in data["queries"]) == 2
    assert re.search(r"top-1 accuracy: (0|0\.5|1)\.?\d*", printed) and "review page:" in printed


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(metadata=False), "metadata CSV '.*nope.csv' does not exist"),
        (lambda d: d.update(images="/nonexistent/images"), "images directory '/nonexistent/images' does not exist"),
        (lambda d: d.update(columns="path"), r"lacks column\(s\) \['identity'\]"),
        (lambda d: d.update(config="data:\n  img_load: sideways\n"), r"data\.img_load: Input should be 'auto', 'full'"),
        (lambda d: d.update(config="pairx:\n  k_colors: 0\n"), r"pairx\.k_colors: must be >= 1, got 0"),
        (lambda d: d.update(split="val"), r"split column 'split' has values \['val'\]"),
        (lambda d: d.update(rows=1), r"has 1 row\(s\); matching needs at least 2 images"),
        (
            lambda d: d.update(bad_path=True),
            r"1 image file\(s\) listed in the metadata do not exist under .*'images/identity_a/not_there.JPG'",
        ),
        (
            lambda d: d.update(corrupt=True),
            r"could not load the images listed in the metadata .*check that every 'path' exists",
        ),
    ],
)
def test_run_bad_inputs_exit_2_with_one_clear_line(cli, seaturtle_dir, tmp_path, capsys, change, message):
    spec = {
        "images": str(seaturtle_dir),
        "metadata": True,
        "columns": None,
        "config": None,
        "split": None,
        "rows": None,
        "bad_path": False,
        "corrupt": False,
    }
    change(spec)
    table = pd.read_csv(seaturtle_dir / "metadata.csv")
    if spec["rows"]:
        table = table.iloc[: spec["rows"]]
    if spec["bad_path"]:
        table.loc[0, "path"] = "images/identity_a/not_there.JPG"
    if spec["corrupt"]:  # a file that exists but is no image: wildlife-tools' own loader fails
        images = tmp_path / "images"
        images.mkdir()
        (images / "broken.png").write_bytes(b"not a png")
        for row in table.itertuples():
            (images / f"{row.image_id}.jpg").write_bytes((seaturtle_dir / row.path).read_bytes())
        table["path"] = [f"{i}.jpg" for i in table.image_id]
        table.loc[0, "path"] = "broken.png"
        spec["images"] = str(images)
    if spec["columns"]:
        table = table[[spec["columns"]]]
    if spec["split"]:
        table["split"] = spec["split"]
    csv = tmp_path / "meta.csv"
    table.to_csv(csv, index=False)
    argv = [
        "run",
        "--images",
        spec["images"],
        "--metadata",
        str(csv if spec["metadata"] else tmp_path / "nope.csv"),
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    if spec["config"]:
        (tmp_path / "c.yaml").write_text(spec["config"])
        argv += ["--config", str(tmp_path / "c.yaml")]
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    # one error line, no traceback (wildlife-tools' own DeepFeatures progress bar may precede it)
    assert len([line for line in err.splitlines() if "error" in line.lower() and "pairx-plugin" in line]) == 1
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "runs").exists()  # nothing half-done


def test_run_settings_defaults_and_overrides():
    settings = load_run_settings(CONFIG, top_k=4)
    assert (settings.model, settings.batch_size, settings.data.img_load) == ("builtin", 4, "full")
    assert (settings.pairx.top_k, settings.pairx.k_colors) == (4, 1)
    assert load_run_settings(None).pairx.top_k == 5
    with pytest.raises(ConfigError, match=r"batch_size: Input should be greater than or equal to 1, got 0"):
        load_run_settings({"batch_size": 0})
    with pytest.raises(
        ConfigError,
        match=r"^modle: unknown key; valid keys are: model, weights, trust_remote_code, batch_size, data, pairx$",
    ):
        load_run_settings({"modle": "builtin"})
    with pytest.raises(ConfigError, match=r"^data\.img_lod: unknown key; valid keys are: img_load, split_column"):
        load_run_settings({"data": {"img_lod": "full"}})
    with pytest.raises(ConfigError, match="configuration file 'missing.yaml' does not exist"):
        load_run_settings("missing.yaml")
