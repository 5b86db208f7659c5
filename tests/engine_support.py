"""Helpers shared by the engine tests: model families with randomised norms, golden inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

#: Devices the device-parametrised engine tests run on: CUDA runs when a GPU is present, else skips.
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device present")),
]


def randomise_norms_and_biases(model: nn.Module, seed: int = 0) -> nn.Module:
    """Perturb BatchNorm statistics/affines and every bias so the model looks trained.

    A canonizer that silently does nothing (an unmerged BatchNorm, an unhandled residual) shows up
    as broken conservation on such a model, while it can hide at initialisation.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.8 + 0.6)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(getattr(m, "bias", None), torch.Tensor):
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.05)
    return model.eval()


def golden_inputs(golden_dir, size: int, pair: str) -> tuple[dict, torch.Tensor, torch.Tensor]:
    data = dict(np.load(golden_dir / f"effnet_lite0_{size}.npz"))
    prefix = f"{pair}__"
    arrays = {k[len(prefix) :]: v for k, v in data.items() if k.startswith(prefix)}
    return arrays, torch.from_numpy(arrays["input0"]), torch.from_numpy(arrays["input1"])


def model_state(model: nn.Module) -> dict:
    """Everything the engine promises to leave untouched."""
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "attrs": [sorted(m.__dict__) for m in model.modules()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks), len(m._backward_pre_hooks))
            for m in model.modules()
        ],
        "forward_overrides": ["forward" in m.__dict__ for m in model.modules()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "params": [n for n, _ in model.named_parameters()],
    }


def assert_same_state(before: dict, after: dict) -> None:
    for key in ("training", "requires_grad", "attrs", "hooks", "forward_overrides", "params"):
        assert before[key] == after[key], f"model {key} changed"
    assert all(a is b for a, b in zip(before["grads"], after["grads"])), "a parameter's .grad changed"
    assert before["state"].keys() == after["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), f"state tensor {k} changed"
