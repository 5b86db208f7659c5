"""After any call, successful or not, the model is exactly as it was and inputs are untouched."""

from __future__ import annotations

import pytest
import timm
import torch
from engine_support import (
    DEVICES,
    assert_same_state,
    model_state,
    randomise_norms_and_biases,
)

from benchmarks.reference_models import seaturtle_batch
from pairx_plugin import PairX
from pairx_plugin.engine import engine as engine_module


@pytest.fixture(scope="module")
def inputs(shared_dir):
    return seaturtle_batch(shared_dir, 160, flips=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["conservative", "parity"])
def test_model_untouched_after_success(inputs, mode, device):
    torch.manual_seed(0)
    model = randomise_norms_and_biases(timm.create_model("efficientnet_lite0", num_classes=0)).train().to(device)
    model.blocks[0].requires_grad_(False)
    before = model_state(model)
    x0, x1 = inputs[:1].clone().to(device), inputs[1:2].clone().to(device)
    x0_copy, x1_copy = x0.clone(), x1.clone()
    PairX(model, layer_keys=["blocks.3"], k_lines=5, k_colors=2, mode=mode).explain_pair(x0, x1)
    assert_same_state(before, model_state(model))
    assert model.training
    assert torch.equal(x0, x0_copy) and torch.equal(x1, x1_copy)
    assert not x0.requires_grad and x0.grad is None


def test_model_untouched_after_failure_mid_pass(inputs, monkeypatch):
    torch.manual_seed(0)
    model = randomise_norms_and_biases(timm.create_model("resnet18", num_classes=0))
    before = model_state(model)
    calls = {"n": 0}
    original = engine_module.PairX._pixel_relevance

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        raise RuntimeError("injected failure during back-projection")

    monkeypatch.setattr(engine_module.PairX, "_pixel_relevance", failing)
    with pytest.raises(RuntimeError, match="injected") as failure:
        PairX(model, layer_keys=["layer3"], k_lines=5, k_colors=2).explain_pair(inputs[:1], inputs[1:2])
    assert calls["n"] == 1
    assert failure.value.stage == "pixels"  # the hook reports where an explanation failed
    assert_same_state(before, model_state(model))
    monkeypatch.setattr(engine_module.PairX, "_pixel_relevance", original)
    # and the model still explains normally afterwards, with the same numbers as a fresh copy
    result = PairX(model, layer_keys=["layer3"], k_lines=5, k_colors=2).explain_pair(inputs[:1], inputs[1:2])
    assert result.layers["layer3"].matches


def test_existing_grads_and_frozen_params_are_preserved(inputs):
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=0).eval()
    model.fc_marker = None  # an attribute of the caller's must survive
    model.conv1.weight.grad = torch.ones_like(model.conv1.weight)
    before = model_state(model)
    PairX(model, layer_keys=["layer2"], k_lines=3, k_colors=1).explain_pair(inputs[:1], inputs[1:2])
    assert_same_state(before, model_state(model))
    assert hasattr(model, "fc_marker")
    assert torch.equal(model.conv1.weight.grad, torch.ones_like(model.conv1.weight))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_runs_on_its_device(inputs):  # pragma: no cover - CPU CI
    model = timm.create_model("resnet18", num_classes=0).cuda().eval()
    before = model_state(model)
    result = PairX(model, layer_keys=["layer3"], k_lines=3, k_colors=1).explain_pair(
        inputs[:1].cuda(), inputs[1:2].cuda()
    )
    assert result.layers["layer3"].matches
    assert_same_state(before, model_state(model))
