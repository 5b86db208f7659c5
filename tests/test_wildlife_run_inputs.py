"""``pairx-plugin run`` inputs that must not be taken at face value (issue 11, items 3, 9, 10 and run
isolation): paths that leave ``--images``, empty identity cells, progress bars under ``--no-progress``,
and two runs started together into one ``--out``. Runs under wildlife-tools 0.0.9 and 1.x alike
(``tests/run_wildlife_v1.sh`` runs this file in the 1.x environment too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pairx_plugin.errors import InvalidInputError
from pairx_wildlife_tools import host
from pairx_wildlife_tools.images import labels
from pairx_wildlife_tools.metadata import check_image_paths
from pairx_wildlife_tools.pipeline import accuracy_over_known, classifier_labels

CONFIG = "model: builtin\nbatch_size: 4\npairx:\n  top_k: 1\n  k_colors: 1\n  render: [composite]\n"


@pytest.fixture()
def cli(monkeypatch):
    from pairx_plugin import cli as core

    points = [
        metadata.EntryPoint(name=n, value=f"pairx_wildlife_tools.commands:register_{n}", group=core.ENTRY_POINT_GROUP)
        for n in ("run", "demo")
    ]
    monkeypatch.setattr(core, "discover_entry_points", lambda: points)
    return core.main


@pytest.fixture()
def images(seaturtle_dir, tmp_path) -> Path:
    """A copy of the sea-turtle images in ``tmp_path/images`` and a secret file beside (outside) it."""
    root = tmp_path / "images"
    for row in pd.read_csv(seaturtle_dir / "metadata.csv").itertuples():
        target = root / row.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((seaturtle_dir / row.path).read_bytes())
    (tmp_path / "outside.JPG").write_bytes((seaturtle_dir / "images/identity_a/image_1.JPG").read_bytes())
    return root


def _table(seaturtle_dir) -> pd.DataFrame:
    return pd.read_csv(seaturtle_dir / "metadata.csv", dtype=str)


# --------------------------------------------------------------------------- (3) paths stay inside --images


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink"])
def test_run_refuses_paths_outside_images_naming_row_and_path(cli, images, seaturtle_dir, tmp_path, capsys, kind):
    table = _table(seaturtle_dir)
    if kind == "parent":
        table.loc[2, "path"] = "../outside.JPG"
    elif kind == "absolute":
        table.loc[2, "path"] = str(tmp_path / "outside.JPG")
    else:  # a symlink inside --images that leads out
        (images / "link.JPG").symlink_to(tmp_path / "outside.JPG")
        table.loc[2, "path"] = "link.JPG"
    csv = tmp_path / "meta.csv"
    table.to_csv(csv, index=False)
    code = cli(
        ["run", "--images", str(images), "--metadata", str(csv), "--out", str(tmp_path / "out"), "--no-progress"]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"row 4 of the CSV (image_id 'image_3'): path {table.loc[2, 'path']!r} leads outside --images" in err, err
    assert "--allow-outside-root" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was read or written


def test_allow_outside_root_accepts_and_symlinks_inside_stay_fine(images, seaturtle_dir, tmp_path):
    table = _table(seaturtle_dir)
    table.loc[2, "path"] = "../outside.JPG"
    resolved = check_image_paths(table, images, allow_outside_root=True)
    assert resolved[2] == (tmp_path / "outside.JPG").resolve()
    (images / "inner.JPG").symlink_to(images / "images/identity_a/image_1.JPG")
    table.loc[2, "path"] = "inner.JPG"
    assert check_image_paths(table, images)[2] == (images / "images/identity_a/image_1.JPG").resolve()
    table.loc[2, "path"] = np.nan
    with pytest.raises(InvalidInputError, match=r"row 4 of the CSV \(image_id 'image_3'\) has an empty 'path'"):
        check_image_paths(table, images)


# --------------------------------------------------------------------------- (9) empty identity = unknown


def test_empty_identities_are_unknown_not_nan(seaturtle_dir):
    from wildlife_tools.data import WildlifeDataset

    table = _table(seaturtle_dir)
    table.loc[1, "identity"] = np.nan
    table.loc[3, "identity"] = "   "
    dataset = WildlifeDataset(table, str(seaturtle_dir))
    assert list(dataset.labels_string)[1] == "nan"  # what wildlife-tools itself would use as the label
    assert labels(dataset) == ["a", None, "b", None]
    assert list(classifier_labels(dataset)) == ["a", "", "b", ""]
    accuracy, scored = accuracy_over_known(np.array(["a", "a", "a", "b"]), labels(dataset))
    assert (accuracy, scored) == (0.5, 2)  # the two unknown queries are left out
    accuracy, scored = accuracy_over_known(np.array(["a", "b"]), [None, None])
    assert np.isnan(accuracy) and scored == 0


@pytest.mark.slow
def test_run_with_an_empty_identity_explains_it_without_a_label(cli, seaturtle_dir, tmp_path, capsys):
    torch.set_num_threads(1)
    table = _table(seaturtle_dir)
    table.loc[1, "identity"] = ""  # image_2, a query
    csv = tmp_path / "meta.csv"
    table.to_csv(csv, index=False)
    (tmp_path / "c.yaml").write_text(CONFIG)
    code = cli(
        [
            "run",
            "--images",
            str(seaturtle_dir),
            "--metadata",
            str(csv),
            "--config",
            str(tmp_path / "c.yaml"),
            "--out",
            str(tmp_path / "out"),
            "--run-name",
            "unknowns",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "(over 1 queries with a known identity; 1 unknown left out)" in out, out
    lines = [json.loads(line)["record"] for line in (tmp_path / "out/runs/unknowns.jsonl").read_text().splitlines()]
    by_query = {r["query_id"]: r for r in lines}
    assert by_query["image_2"]["query_label"] is None and by_query["image_2"]["explanation"] is not None
    assert by_query["image_4"]["query_label"] == "b"
    assert "nan" not in {r["query_label"] for r in lines} | {r["candidate_label"] for r in lines}


# --------------------------------------------------------------------------- (10) --no-progress is quiet


class _TinyEmbedding(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def test_quiet_progress_hides_wildlife_tools_extraction_bar(seaturtle_dir, capsys):
    import torchvision.transforms as T
    from wildlife_tools.data import WildlifeDataset
    from wildlife_tools.features import DeepFeatures

    dataset = WildlifeDataset(
        _table(seaturtle_dir), str(seaturtle_dir), transform=T.Compose([T.Resize((32, 32)), T.ToTensor()])
    )
    extractor = DeepFeatures(_TinyEmbedding(), batch_size=2, num_workers=0)
    capsys.readouterr()
    loud = extractor(dataset)
    assert "%|" in capsys.readouterr().err  # the bar this test is about (so the next check can fail)
    with host.quiet_progress(extractor):
        quiet = extractor(dataset)
    assert "%|" not in capsys.readouterr().err
    assert np.array_equal(np.asarray(getattr(loud, "features", loud)), np.asarray(getattr(quiet, "features", quiet)))
    extractor(dataset)
    assert "%|" in capsys.readouterr().err  # put back afterwards


# --------------------------------------------------------------------------- two runs into one --out


@pytest.mark.slow
def test_two_runs_started_together_into_one_out_both_complete(seaturtle_dir, tmp_path):
    (tmp_path / "c.yaml").write_text(CONFIG)
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-c",
        "import sys; from pairx_plugin.cli import main; sys.exit(main())",
        "run",
        "--images",
        str(seaturtle_dir),
        "--metadata",
        str(seaturtle_dir / "metadata.csv"),
        "--config",
        str(tmp_path / "c.yaml"),
        "--out",
        str(out),
        "--no-progress",
        "--threads",
        "1",
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    results = [p.communicate(timeout=600) for p in processes]
    for process, (stdout, stderr) in zip(processes, results):
        assert process.returncode == 0, (stdout, stderr)
    manifests = sorted((out / "runs").glob("*.jsonl"))
    pages = sorted((out / "review").glob("*.html"))
    assert len(manifests) == 2 and len(pages) == 2, (manifests, pages)
    assert {m.stem for m in manifests} == {p.stem for p in pages}
    for manifest in manifests:
        entries = [json.loads(line) for line in manifest.read_text().splitlines()]  # no interleaved lines
        assert sorted(e["record"]["query_id"] for e in entries) == ["image_2", "image_4"]
        assert all(e["status"] == "explained" for e in entries)
