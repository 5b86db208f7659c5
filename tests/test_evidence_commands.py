"""`pairx-plugin evaluate` and `pairx-plugin calibrate` on a run directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_evidence_evaluation import record

from pairx_plugin.artifacts.store import ArtifactStore
from pairx_plugin.cli import main
from pairx_plugin.evidence.calibration import load_calibration


@pytest.fixture()
def run_dir(tmp_path):
    rng = np.random.default_rng(0)
    store = ArtifactStore(tmp_path / "run")
    with store.open_run("labelled") as manifest:
        index = 0
        for q in range(12):
            for rank in range(3):
                same = bool(rng.random() < 0.35)
                evidence = float(np.clip(rng.normal(0.5 if same else 0.2, 0.15), 0, 1))
                manifest.append(
                    index,
                    "explained",
                    record(f"q{q}", f"c{q}_{rank}", rank, 0.9 - 0.1 * rank + rng.normal(0, 0.02), same, evidence),
                )
                index += 1
    return tmp_path / "run"


def test_evaluate_prints_aurocs_and_writes_a_plot_that_opens(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--bins", "3"]) == 0
    out = capsys.readouterr().out
    assert "host_score" in out and "evidence" in out and "top-1 over 12 queries" in out
    with Image.open(run_dir / "evaluation.png") as image:
        image.load()
        assert image.size == (840, 420)
        assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 4  # curves drawn, not blank
    summary = json.loads((run_dir / "evaluation.json").read_text())
    assert summary["records"] == 36 and len(summary["bin_edges"]) == 4
    evidence = next(m for m in summary["metrics"] if m["name"] == "evidence")
    assert evidence["auroc"] > 0.8


def test_calibrate_writes_a_file_evaluate_and_the_config_can_use(run_dir, capsys):
    assert main(["calibrate", str(run_dir), "--method", "logistic"]) == 0
    calibration = load_calibration(run_dir / "calibration.json")
    assert calibration.method == "logistic" and calibration.samples == 36 and calibration.coef > 0
    assert (
        main(
            [
                "evaluate",
                str(run_dir),
                "--score",
                "calibrated",
                "--calibration",
                str(run_dir / "calibration.json"),
                "--out",
                str(run_dir / "eval"),
            ]
        )
        == 0
    )
    assert "score=calibrated" in capsys.readouterr().out
    assert (run_dir / "eval" / "evaluation.png").is_file()


@pytest.mark.parametrize("command", ["evaluate", "calibrate"])
def test_bad_run_directories_are_named(tmp_path, capsys, command):
    assert main([command, str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([command, str(tmp_path / "empty")]) == 2
    assert "no runs/*.jsonl manifest" in capsys.readouterr().err
    assert main([command, str(tmp_path / "empty"), "--run", "x"]) == 2
    assert "has no manifest" in capsys.readouterr().err


def test_unlabelled_run_is_a_clear_error(tmp_path, capsys):
    store = ArtifactStore(tmp_path / "run")
    with store.open_run("unlabelled") as manifest:
        manifest.append(0, "explained", record("q", "c", 0, 0.5, None, 0.4))
    assert main(["evaluate", str(tmp_path / "run")]) == 2
    assert "labelled records" in capsys.readouterr().err
    assert main(["calibrate", str(tmp_path / "run")]) == 2
    assert "no labelled record" in capsys.readouterr().err


def test_evaluate_rejects_a_bad_alpha(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--alpha", "1.5"]) == 2
    assert "alpha" in capsys.readouterr().err
