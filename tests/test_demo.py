"""``pairx-plugin demo`` at a reduced size: synthetic animals, the real wildlife-tools pipeline and
engine, and figures that can be checked because every warp is known."""

from __future__ import annotations

import json
from importlib import metadata

import numpy as np
import pytest
import torch

from pairx_plugin.artifacts.review import page_links, read_page_data
from pairx_plugin.models import ModelBundle
from pairx_wildlife_tools.demo import report_lines, run_demo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_demo(lite0_imagenet, tmp_path_factory):
    torch.set_num_threads(1)
    printed: list[str] = []
    out = tmp_path_factory.mktemp("demo")
    result = run_demo(
        out,
        animals=4,
        sightings=3,
        top_k=2,
        k_colors=1,
        progress=False,
        model=ModelBundle(lite0_imagenet),
        render=["composite", "heatmaps"],
        echo=printed.append,
    )
    return result, printed, out


def _printed_value(printed, prefix):
    line = next(line for line in printed if line.startswith(prefix))
    return line[len(prefix) :].split()[0]


def test_printed_accuracy_is_the_classifiers(small_demo):
    from wildlife_tools.inference import KnnClassifier

    result, printed, _ = small_demo
    table = result.synthetic.metadata
    # the classifier's predictions, recomputed from the pipeline's (self-masked) similarity
    predictions = KnnClassifier(k=1, database_labels=table.identity.to_numpy())(result.pipeline.similarity)
    accuracy = float(np.mean(predictions == table.identity.to_numpy()))
    assert list(result.pipeline.predictions) == list(predictions)
    assert _printed_value(printed, "top-1 accuracy: ") == f"{accuracy:.4f}"
    assert result.accuracy == pytest.approx(accuracy)


def test_line_landing_is_measured_from_the_known_warps(small_demo):
    result, printed, _ = small_demo
    c = result.correspondence
    assert len(result.line_scores) == 12 * 2  # every explained match is scored
    assert c.correct_matches + c.incorrect_matches == 24
    for share in (c.correct_share, c.incorrect_share):
        assert share is None or (isinstance(share, float) and 0.0 <= share <= 1.0)
    assert c.correct_share is not None  # 3 sightings per animal: some top-2 match is correct
    assert c.correct_share > 2 * c.correct_baseline  # lines of true matches follow the true geometry
    landed = sum(s.landed for s in result.line_scores if s.same_identity)
    assert c.correct_share == pytest.approx(landed / c.correct_lines)
    shown = _printed_value(printed, "lines within one cell of the true correspondence, correct matches: ")
    assert shown == f"{c.correct_share:.3f}"
    assert printed == report_lines(result)


def test_demo_leaves_artifacts_manifest_summary_and_review_page(small_demo):
    result, _, out = small_demo
    records = result.pipeline.records
    assert all(r.explanation is not None for r in records), [r.explanation_error for r in records]
    manifest = (out / "runs" / "demo.jsonl").read_text().splitlines()
    assert len(manifest) == len(records) == 24
    assert result.pipeline.review_page == out / "review.html"  # where the README points
    data = read_page_data(result.pipeline.review_page.read_text())
    assert sum(len(q["records"]) for q in data["queries"]) == 24 and len(data["queries"]) == 12
    links = set(page_links(data))
    assert links and all((out / link).is_file() for link in links)
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["accuracy"] == result.accuracy and len(summary["per_match"]) == 24


def test_demo_command_through_the_cli_core_rejects_bad_sizes(monkeypatch, tmp_path, capsys):
    from pairx_plugin import cli

    points = [
        metadata.EntryPoint(name=n, value=f"pairx_wildlife_tools.commands:register_{n}", group=cli.ENTRY_POINT_GROUP)
        for n in ("run", "demo")
    ]
    monkeypatch.setattr(cli, "discover_entry_points", lambda: points)
    assert cli.main(["demo", "--out", str(tmp_path), "--animals", "1"]) == 2
    assert "animals=1" in capsys.readouterr().err
    assert cli.main(["demo", "--out", str(tmp_path), "--top-k", "0"]) == 2
