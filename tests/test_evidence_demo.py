"""`pairx-plugin demo --scenes`: the scene set through the real pipeline reports the evidence figures
and the landing share of the drawn (curator) lines, recomputed here from the stored artifacts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pairx_plugin.artifacts.schema import ExplanationArtifact
from pairx_plugin.models import ModelBundle
from pairx_wildlife_tools.correspondence import landed_lines
from pairx_wildlife_tools.demo import run_demo


@pytest.fixture(scope="module")
def scene_demo(tmp_path_factory, lite0_imagenet):
    """One tiny scene demo (3 animals x 3 sightings, top-2) shared by the tests of this module."""
    out = tmp_path_factory.mktemp("scene_demo")
    printed: list[str] = []
    result = run_demo(
        out,
        animals=3,
        sightings=3,
        top_k=2,
        k_colors=1,
        scenes=True,
        progress=False,
        model=ModelBundle(lite0_imagenet),
        render=["display"],
        echo=printed.append,
    )
    return out, result, printed


@pytest.mark.slow
def test_scene_demo_reports_evidence_with_the_animal_masks(scene_demo):
    tmp_path, result, printed = scene_demo
    records = [r for r in result.pipeline.records if r.explanation is not None]
    assert records and all(r.explanation.metrics.evidence.foreground == "mask" for r in records)
    text = "\n".join(printed)
    assert "evidence AUROC" in text and "lines supporting the evidence" in text
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert summary["settings"]["scenes"] is True and summary["evidence"]
    assert result.evidence is not None and result.evidence.supporting_lines > 0


@pytest.mark.slow
def test_scene_demo_reports_the_drawn_lines_from_the_artifacts(scene_demo):
    tmp_path, result, printed = scene_demo
    c = result.curator_correspondence
    assert c is not None and result.curator_line_scores is not None
    lines = landed = 0
    for record in result.pipeline.records:
        artifact = ExplanationArtifact.model_validate_json((tmp_path / record.explanation.json_path).read_text())
        assert artifact.curator_lines.selection == "foreground"  # the scene set gives every image's mask
        drawn = artifact.curator_lines.matches
        assert len(drawn) <= artifact.settings.k_lines
        if record.query_label != record.candidate_label or not drawn:
            continue
        size = (artifact.query.input_height, artifact.query.input_width)
        hits, _ = landed_lines(
            np.array([m.query_xy for m in drawn]),
            np.array([m.candidate_xy for m in drawn]),
            result.synthetic.query_to_candidate(record.query_id, record.candidate_id, size),
            size[1] / 14,  # blocks.3 of the 224-px Lite0 input: 14 x 14 cells
        )
        lines += len(hits)
        landed += int(hits.sum())
    assert c.correct_lines == lines and lines > 0
    assert c.correct_share == pytest.approx(landed / lines)
    prefix = "curator lines (drawn) within one cell of the true correspondence, correct matches: "
    shown = next(line for line in printed if line.startswith(prefix))
    assert shown.startswith(f"{prefix}{c.correct_share:.3f} ({lines} lines over {c.correct_matches} matches")
