"""pairx_ray pieces that need no Ray: how the model reaches a worker, query grouping, collected manifest lines."""

from __future__ import annotations

import pytest
import torch
from pairx_ray.runner import plan_groups
from pairx_ray.worker import CollectingStore, build_model
from torch import nn

from pairx_plugin.config import PairXConfig
from pairx_plugin.models import ModelBundle
from pairx_plugin.records import MatchRecord


def tiny_module() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).train()


def tiny_bundle() -> ModelBundle:
    return ModelBundle(model=tiny_module(), input_size=32)


class Wrapper(nn.Module):
    """A module with a ``model`` attribute of its own: it must not be unwrapped."""

    def __init__(self) -> None:
        super().__init__()
        self.model = tiny_module()


def test_build_model_from_a_factory_a_bundle_factory_and_a_spec():
    for factory, kind in ((tiny_module, nn.Sequential), (tiny_bundle, nn.Sequential), (Wrapper, Wrapper)):
        model = build_model(factory)
        assert isinstance(model, kind) and not model.training  # eval mode, the wrapper kept whole
    assert isinstance(build_model("timm:resnet18"), nn.Module)
    with pytest.raises(Exception, match="no_such_module"):
        build_model("no_such_module:build")


def test_plan_groups_keeps_query_order_and_decides_duplicates_with_the_hooks_message():
    records = [
        MatchRecord(query_id=q, candidate_id=c, rank=r, score=0.5)
        for q, c, r in (("a", "x", 0), ("b", "x", 0), ("a", "y", 1), ("a", "x", 2))
    ]
    groups, decided = plan_groups(records, PairXConfig())
    assert groups == [[0, 2], [1]]
    (duplicate,) = decided
    assert duplicate.index == 3 and duplicate.status == "error"
    assert duplicate.record.explanation_error.stage == "load"
    assert "already appears at index 0" in duplicate.record.explanation_error.message
    assert duplicate.record.rank == 2 and duplicate.record.score == 0.5


def test_collecting_store_keeps_manifest_lines_in_memory(tmp_path):
    store = CollectingStore(tmp_path)
    record = MatchRecord(query_id="a", candidate_id="b", rank=0, score=1.0)
    with store.open_run("anything") as manifest:
        manifest.append(0, "not_explained", record)
    assert store.collected.lines == [(0, "not_explained", record)]
    assert not (tmp_path / "runs").exists()  # the driver writes the one manifest
