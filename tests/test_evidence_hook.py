"""The hook puts the evidence score on every explained record and re-ranks only when asked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from evidence_support import (
    CELL,
    SIZE,
    layer_from_cells,
    pair_of,
    scattered_cells,
    shifted_cells,
)

from pairx_plugin.artifacts.store import ArtifactStore, read_manifest
from pairx_plugin.config import PairXConfig
from pairx_plugin.errors import InvalidInputError
from pairx_plugin.hook import LoadedImage, explain_matches
from pairx_plugin.records import MatchRecord

ANIMAL = [(x, y) for x in range(4, 10) for y in range(5, 9)]


class GeometryEngine:
    """Stands in for ``PairX``: candidate ids ending in 'same' get consistent matches, others scattered ones."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.layer_keys = ["blocks.3"]

    def explain_query(self, query, candidates, *, return_exceptions=False):
        out = []
        for tensor in candidates:
            name = self.source.name_of(tensor)
            cells = (
                shifted_cells(ANIMAL, 1, 0) if name.endswith("same") else scattered_cells(len(ANIMAL), seed=len(name))
            )
            out.append(pair_of(layer_from_cells(cells)))
        return out


class Source:
    def __init__(self, names: list[str], masks: dict[str, object]) -> None:
        self.names = names
        self.masks = masks

    def load(self, image_id: str) -> LoadedImage:
        index = self.names.index(image_id)
        tensor = torch.full((1, 3, SIZE, SIZE), float(index))
        display = np.full((SIZE, SIZE, 3), index, np.uint8)
        return LoadedImage(tensor=tensor, display=display, foreground=self.masks.get(image_id))

    def name_of(self, tensor: torch.Tensor) -> str:
        return self.names[int(tensor[0, 0, 0, 0].item())]


def animal_mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[int(4 * CELL) : int(10 * CELL), int(3 * CELL) : int(12 * CELL)] = True
    return mask


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


def run(tmp_path, model, config: PairXConfig, masks: dict[str, object] | None = None):
    names = ["q", "other", "q_same", "boxed"]
    source = Source(names, masks if masks is not None else {n: animal_mask() for n in names})
    records = [
        MatchRecord(
            query_id="q",
            candidate_id=c,
            rank=r,
            score=0.9 - 0.1 * r,
            query_label="a",
            candidate_label="a" if c.endswith("same") else "b",
        )
        for r, c in enumerate(["other", "q_same", "boxed"])
    ]
    store = ArtifactStore(tmp_path / "store")
    out = explain_matches(
        records=records,
        images=source,
        model=model,
        config=config,
        store=store,
        engine=GeometryEngine(source),
        progress=False,
        run_name="evidence",
    )
    return records, out, store


def test_records_carry_the_evidence_and_the_artifact_too(tmp_path, model):
    config = PairXConfig(render=["display"], k_lines=30)
    _, out, store = run(tmp_path, model, config)
    same = out[1].explanation.metrics.evidence
    other = out[0].explanation.metrics.evidence
    assert same.foreground == "mask" and same.score > 0.9 and same.geometric == pytest.approx(1.0)
    assert other.score < 0.5 * same.score
    artifact = store.load(out[1].explanation.artifact_id)
    assert artifact.metrics.evidence == same
    assert [m.supports_evidence for m in artifact.matches] == [True] * len(ANIMAL)
    scattered = store.load(out[0].explanation.artifact_id).matches
    assert sum(bool(m.supports_evidence) for m in scattered) == other.inliers
    entries = read_manifest(store.manifest_path("evidence"))
    assert entries[1].record.explanation.metrics.evidence == same
    assert all(r.rerank is None for r in out)  # re-ranking is off by default


def test_no_host_foreground_uses_the_centre_prior_and_a_mask_changes_the_artifact(tmp_path, model):
    config = PairXConfig(render=["display"], k_lines=30)
    _, with_mask, _ = run(tmp_path / "a", model, config)
    _, without, _ = run(tmp_path / "b", model, config, masks={})
    assert without[1].explanation.metrics.evidence.foreground == "centre_prior"
    assert without[1].explanation.artifact_id != with_mask[1].explanation.artifact_id


def test_rerank_through_the_hook_keeps_host_scores(tmp_path, model):
    config = PairXConfig(render=["display"], k_lines=30, rerank={"enabled": True, "alpha": 0.3, "shortlist_k": 3})
    records, out, _ = run(tmp_path, model, config)
    assert [r.score for r in out] == [r.score for r in records]
    assert [r.rank for r in out] == [0, 1, 2]
    assert out[1].rerank.position == 0 and out[0].rerank.position > 0


def test_a_foreground_of_the_wrong_size_is_refused_when_the_image_is_made():
    with pytest.raises(InvalidInputError, match=r"LoadedImage.foreground mask has shape \(3, 3\)"):
        LoadedImage(tensor=torch.zeros(1, 3, 8, 8), display=np.zeros((8, 8, 3), np.uint8), foreground=np.ones((3, 3)))


def test_a_failing_evidence_score_keeps_the_explanation(tmp_path, model, monkeypatch, caplog):
    from pairx_plugin.evidence import attach

    def broken(*args, **kwargs):
        raise RuntimeError("injected evidence failure")

    monkeypatch.setattr(attach, "pair_evidence_details", broken)
    _, out, _ = run(tmp_path, model, PairXConfig(render=["display"], k_lines=30))
    assert all(r.explanation is not None and r.explanation.metrics.evidence is None for r in out)
    assert "injected evidence failure" in caplog.text
