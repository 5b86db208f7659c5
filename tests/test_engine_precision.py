"""Half-precision models are refused at construction with a PairXError that says what to do; the
documented remedy (a float32 model, float32 inputs) explains normally. The host's model is untouched."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from engine_support import assert_same_state, model_state

from pairx_plugin import PairX
from pairx_plugin.errors import InvalidInputError


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_model_is_refused_with_a_remedy(dtype):
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=0).eval().to(dtype)
    before = model_state(model)
    with pytest.raises(InvalidInputError, match=rf"parameters are {dtype}.*model\.float\(\)") as refused:
        PairX(model, layer_keys=["layer3"])
    assert "copy.deepcopy(model).float()" in str(refused.value)
    assert_same_state(before, model_state(model))
    assert all(p.dtype == dtype for p in model.parameters())

    # the remedy the message gives: a float32 copy, float32 inputs; the host's half model stays as it is
    working = copy.deepcopy(model).float()
    x = torch.rand((2, 3, 64, 64), generator=torch.Generator().manual_seed(1))
    pair = PairX(working, layer_keys=["layer3"], k_lines=3, k_colors=1).explain_pair(x[:1], x[1:])
    assert pair.layers["layer3"].matches and -1.0 <= pair.cosine <= 1.0
    assert_same_state(before, model_state(model))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_for_a_float32_model_are_named(dtype):
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=0).eval()
    x = torch.rand((1, 3, 64, 64)).to(dtype)
    with pytest.raises(InvalidInputError, match=rf"query has dtype {dtype}.*convert with \.to\(torch\.float32\)"):
        PairX(model, layer_keys=["layer3"]).explain_pair(x, x)
