"""`pairx-plugin demo --scenes`: the scene set through the real pipeline reports the evidence figures."""

from __future__ import annotations

import json

import pytest

from pairx_plugin.models import ModelBundle
from pairx_wildlife_tools.demo import run_demo


@pytest.mark.slow
def test_scene_demo_reports_evidence_with_the_animal_masks(tmp_path, lite0_imagenet):
    printed: list[str] = []
    result = run_demo(
        tmp_path,
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
    records = [r for r in result.pipeline.records if r.explanation is not None]
    assert records and all(r.explanation.metrics.evidence.foreground == "mask" for r in records)
    text = "\n".join(printed)
    assert "evidence AUROC" in text and "lines supporting the evidence" in text
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert summary["settings"]["scenes"] is True and summary["evidence"]
    assert result.evidence is not None and result.evidence.supporting_lines > 0
