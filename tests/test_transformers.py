"""Transformer and ConvNeXt backbones under the gradient x input backend (issue 5).

Conservation is measured with biases excluded by *zeroing* every bias (Linear, Conv, LayerNorm,
SwinV2's q/v biases) on models whose norm affines, layer scales and attention position biases are
perturbed to look trained, so a rule that silently does nothing shows up. Relevance at a stage is
``gradient x activation`` summed over the whole native tensor (prefix tokens included).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from pairx_plugin import PairX
from pairx_plugin.engine.hooks import capture_outputs
from pairx_plugin.engine.layouts import (
    Layout,
    NHWCLayout,
    TokenGridLayout,
    detect_layout,
)
from pairx_plugin.engine.relevance import choose_backend
from pairx_plugin.engine.relevance.gradient_x_input import GradientXInput
from pairx_plugin.errors import ConfigError, UnsupportedModelError

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


# ----------------------------------------------------------------------------- models


def _timm(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=0, **kwargs).eval()


def _torchvision_swin() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.swin_t()
    model.head = nn.Identity()
    return model.eval()


def _torchvision_convnext() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.convnext_tiny()
    model.classifier[2] = nn.Identity()  # the 768-d embedding instead of ImageNet logits
    return model.eval()


class Wrapper(nn.Module):
    """A re-ID model that keeps its backbone as ``.backbone`` (MiewID / wildlife-tools style)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


#: name -> (factory, input size, stage keys from shallow to deep)
FAMILIES = {
    "swin": (lambda: _timm("swin_tiny_patch4_window7_224"), 224, ["patch_embed"] + [f"layers.{i}" for i in range(4)]),
    "vit": (lambda: _timm("vit_small_patch16_224"), 224, [f"blocks.{i}" for i in (0, 3, 7, 11)]),
    "dinov2_reg4": (
        lambda: _timm("vit_small_patch14_reg4_dinov2", img_size=224),
        224,
        [f"blocks.{i}" for i in (0, 3, 7, 11)],
    ),
    "swinv2": (lambda: _timm("swinv2_tiny_window8_256"), 256, ["patch_embed"] + [f"layers.{i}" for i in range(4)]),
    "convnext_timm": (lambda: _timm("convnext_tiny"), 224, ["stem"] + [f"stages.{i}" for i in range(4)]),
    "convnext_torchvision": (_torchvision_convnext, 224, [f"features.{i}" for i in range(8)]),
    "swin_torchvision": (_torchvision_swin, 224, [f"features.{i}" for i in range(8)]),
    "bit_groupnorm": (lambda: _timm("resnetv2_50x1_bit"), 224, ["stem"] + [f"stages.{i}" for i in range(4)]),
}


def _look_trained(model: nn.Module, seed: int = 1) -> nn.Module:
    """Zero every bias; give norm weights, layer scales and attention position biases trained-like values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            leaf = name.split(".")[-1]
            if leaf.endswith("bias") and "relative_position" not in leaf:
                param.zero_()
            elif "relative_position_bias_table" in leaf:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
            elif leaf in ("gamma", "layer_scale") or name.endswith(("ls1.gamma", "ls2.gamma")):
                param.copy_(torch.rand(param.shape, generator=generator) * 0.9 + 0.1)
        for module in model.modules():
            if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) and module.weight is not None:
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
    return model


@pytest.fixture(scope="module")
def turtle_pair(seaturtle_dir: Path):
    """Two real sea-turtle photos of one identity, as the (1,3,S,S) ImageNet-normalised tensors a model eats."""

    def load(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        tensors = []
        for path in ("images/identity_a/image_1.JPG", "images/identity_a/image_2.JPG"):
            image = Image.open(seaturtle_dir / path).convert("RGB").resize((size, size), Image.BILINEAR)
            array = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
            tensors.append((array - MEAN) / STD)
        return tensors[0], tensors[1]

    return load


def _stage_relevance(model, backend, keys, x0, x1, use_context: bool = True):
    """Per-image relevance sums at the embedding and at each key, plus the native stage tensors.

    Seed: R = n0 * n1 at both embeddings (sums to the cosine).
    """
    x = torch.cat([x0, x1]).requires_grad_(True)
    modules = {k: model.get_submodule(k) for k in keys}
    ctx = backend.context(model) if use_context else contextlib.nullcontext(model)
    with ctx as runner, capture_outputs(modules) as outputs:
        emb = runner(x)
    n = F.normalize(emb.detach(), dim=1)
    r_emb = (n[0] * n[1]).expand(2, -1)
    tensors = [outputs[k] for k in keys] + [x]
    grads = torch.autograd.grad(emb, tensors, grad_outputs=backend.seed(r_emb, emb.detach()), retain_graph=True)
    sums = {k: backend.relevance(g, a.detach()).flatten(1).sum(1) for k, g, a in zip(keys + ["input"], grads, tensors)}
    relevance = {k: backend.relevance(g, a.detach()) for k, g, a in zip(keys, grads, tensors)}
    return r_emb.sum(1), sums, outputs, relevance, emb


# ----------------------------------------------------------------------------- backend choice


@pytest.mark.parametrize("family", list(FAMILIES))
def test_auto_backend_picks_gradient_x_input_for_norm_and_attention_families(family):
    model = FAMILIES[family][0]()
    assert GradientXInput.supports(model)
    assert GradientXInput.supports(Wrapper(model))
    assert choose_backend(model).name == "gradient-x-input"


def test_plain_batchnorm_cnns_are_left_to_zennit():
    for model in (_timm("resnet18"), torchvision.models.resnet18(), _timm("efficientnet_lite0")):
        assert not GradientXInput.supports(model)
        assert choose_backend(model).name == "zennit-lrp"
    with pytest.raises(UnsupportedModelError, match="gradient-x-input"):
        choose_backend(_timm("resnet18"), name="gradient-x-input")


def test_multihead_attention_models_are_not_claimed():
    """``nn.MultiheadAttention`` computes softmax inside one fused call a function mode cannot see."""
    model = nn.Sequential(nn.Conv2d(3, 8, 4, 4), nn.Flatten(2))
    model.add_module("attn", nn.MultiheadAttention(8, 2, batch_first=True))
    assert not GradientXInput.supports(model)


def test_bad_backend_options_raise_config_errors_naming_the_option():
    with pytest.raises(ConfigError, match="linear_rule='zplus'.*gradient.*gamma"):
        GradientXInput(linear_rule="zplus")
    with pytest.raises(ConfigError, match="gamma=-0.5"):
        GradientXInput(linear_rule="gamma", gamma=-0.5)
    with pytest.raises(ConfigError, match="gamma=nan"):
        GradientXInput(linear_rule="gamma", gamma=float("nan"))


# ----------------------------------------------------------------------------- single rules

_G = torch.Generator().manual_seed(11)
_W8 = torch.rand(8, generator=_G) + 0.5
_CONV = torch.randn(5, 3, 3, 3, generator=_G)
_LIN = torch.randn(6, 8, generator=_G)

#: name -> (call, input shape); every call is homogeneous of degree 1 in its input under the rules
SINGLE_RULES = {
    "layer_norm": (lambda x: F.layer_norm(x, (8,), _W8), (4, 8)),
    "group_norm": (lambda x: F.group_norm(x, 2, _W8), (2, 8, 3, 3)),
    "rms_norm": (lambda x: F.rms_norm(x, (8,), _W8), (4, 8)),
    "normalize": (lambda x: F.normalize(x, dim=-1), (4, 8)),
    "gelu": (lambda x: F.gelu(x), (4, 8)),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), (4, 8)),
    "silu_inplace": (lambda x: F.silu(x, inplace=True), (4, 8)),
    "mish": (lambda x: F.mish(x), (4, 8)),
    "hardswish": (lambda x: F.hardswish(x), (4, 8)),
    "linear_gamma": (lambda x: F.linear(x, _LIN), (4, 8)),
    "conv2d_gamma": (lambda x: F.conv2d(x, _CONV, None, 1, 1), (1, 3, 6, 6)),
}


@pytest.mark.parametrize("name", list(SINGLE_RULES))
def test_each_rule_keeps_values_and_conserves_gradient_x_input(name):
    call, shape = SINGLE_RULES[name]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    native = call(x.clone())
    backend = GradientXInput(linear_rule="gamma" if "gamma" in name else "gradient")
    leaf = x.clone().requires_grad_(True)
    with backend.context(nn.Identity()):
        out = call(leaf)
    assert torch.equal(out.detach(), native)
    assert torch.equal(leaf.detach(), x)  # an in-place activation does not overwrite the input
    assert sum(backend.last_mode.counts.values()) == 1
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (grad,) = torch.autograd.grad(out, leaf, grad_outputs=g)
    torch.testing.assert_close((grad * x).sum(), (g * native).sum(), rtol=1e-4, atol=1e-5)


def test_attention_rules_make_the_weights_constant():
    q, k, v = (torch.randn(1, 2, 5, 4, requires_grad=True) for _ in range(3))
    mask = torch.randn(5, 5, requires_grad=True)
    backend = GradientXInput()
    with backend.context(nn.Identity()):
        fused = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        weights = (q @ k.transpose(-1, -2)).softmax(dim=-1)
        by_hand = weights @ v
    assert not weights.requires_grad
    # as a host computes it, with no input needing gradients (which ones do can change the CPU kernel)
    host = F.scaled_dot_product_attention(q.detach(), k.detach(), v.detach(), attn_mask=mask.detach())
    assert torch.equal(fused.detach(), host)
    grads = torch.autograd.grad(fused.sum() + by_hand.sum(), (q, k, v, mask), allow_unused=True, retain_graph=True)
    assert grads[0] is None and grads[1] is None and grads[3] is None
    g = torch.ones_like(fused)
    (grad_v,) = torch.autograd.grad(fused, v, grad_outputs=g)
    torch.testing.assert_close((grad_v * v).sum(), fused.sum())


# ----------------------------------------------------------------------------- conservation


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_stage_conserves_the_cosine(family, turtle_pair):
    factory, size, keys = FAMILIES[family]
    model = _look_trained(factory())
    backend = GradientXInput()
    x0, x1 = turtle_pair(size)
    total, sums, outputs, relevance, _ = _stage_relevance(model, backend, keys, x0, x1)
    assert torch.isfinite(total).all() and (total.abs() > 1e-3).all()
    for key in keys:
        ratio = sums[key] / total
        assert torch.isfinite(relevance[key]).all(), key
        assert ((ratio > 0.98) & (ratio < 1.02)).all(), f"{family} {key}: {ratio.tolist()}"
    # the rules really fired (a no-op mode would not conserve, see the control test below)
    assert backend.last_mode.counts.get("layer_norm", 0) + backend.last_mode.counts.get("group_norm", 0) > 0

    # between stages: relevance placed at the deepest stage flows back to the shallowest one intact
    deep, shallow = keys[-1], keys[0]
    with backend.context(model) as runner, capture_outputs({k: model.get_submodule(k) for k in (deep, shallow)}) as out:
        runner(torch.cat([x0, x1]))
    (grad,) = torch.autograd.grad(
        out[deep], out[shallow], grad_outputs=backend.seed(relevance[deep], out[deep].detach())
    )
    between = backend.relevance(grad, out[shallow].detach()).flatten(1).sum(1) / relevance[deep].flatten(1).sum(1)
    assert ((between > 0.98) & (between < 1.02)).all(), f"{family} {deep}->{shallow}: {between.tolist()}"


def test_plain_gradient_x_input_does_not_conserve_on_swin(turtle_pair):
    """Control: without the rules (LayerNorm scale live, GELU curved, softmax live) the sums drift."""
    model = _look_trained(_timm("swin_tiny_patch4_window7_224"))
    keys = [f"layers.{i}" for i in range(4)]
    total, sums, *_ = _stage_relevance(model, GradientXInput(), keys, *turtle_pair(224), use_context=False)
    ratios = torch.stack([sums[k] / total for k in keys])
    assert ((ratios < 0.98) | (ratios > 1.02)).any(), ratios.tolist()


def test_swin_input_relevance_conserves_without_position_embedding(turtle_pair):
    """Swin has no absolute position embedding or class token: with biases zeroed, pixels get it all."""
    model = _look_trained(_timm("swin_tiny_patch4_window7_224"))
    total, sums, *_ = _stage_relevance(model, GradientXInput(), ["layers.2"], *turtle_pair(224))
    ratio = sums["input"] / total
    assert ((ratio > 0.98) & (ratio < 1.02)).all(), ratio.tolist()


def test_one_cell_seed_through_the_layout_conserves_to_pixels(turtle_pair):
    """The engine's pixel pass on an NHWC stage: seed one NCHW cell, read relevance at the pixels."""
    model = _look_trained(_timm("swin_tiny_patch4_window7_224"))
    backend = GradientXInput()
    x = turtle_pair(224)[0].clone().requires_grad_(True)
    with backend.context(model) as runner, capture_outputs({"layers.2": model.layers[2]}) as out:
        runner(x)
    native = out["layers.2"]
    layout = detect_layout(model, "layers.2", model.layers[2], native)
    assert isinstance(layout, NHWCLayout)
    fm = layout.to_nchw(native.detach())
    seed = torch.zeros_like(fm)
    seed[0, :, 5, 9] = fm[0, :, 5, 9]
    (grad,) = torch.autograd.grad(native, x, grad_outputs=backend.seed(layout.from_nchw(seed, native), native.detach()))
    pixels = backend.relevance(grad, x.detach())
    ratio = pixels.sum() / fm[0, :, 5, 9].sum()
    assert 0.98 < ratio < 1.02
    # a cell at the top-left corner of the map draws nothing from the bottom-right corner of the image
    assert pixels[..., 200:, 200:].abs().sum() < 1e-3 * pixels.abs().sum()


# ----------------------------------------------------------------------------- exactness and hygiene


@pytest.mark.parametrize("rule", ["gradient", "gamma"])
@pytest.mark.parametrize("family", ["swin", "dinov2_reg4"])
def test_forward_values_are_bit_identical_inside_the_context(family, rule, turtle_pair):
    factory, size, _ = FAMILIES[family]
    model = factory()
    x = turtle_pair(size)[0]
    with torch.no_grad():
        native = model(x)
    backend = GradientXInput(linear_rule=rule)
    with backend.context(model) as runner:
        inside = runner(x.clone().requires_grad_(True))
    assert torch.equal(inside.detach(), native)


def test_context_leaves_no_function_mode_also_when_the_body_raises():
    model = _timm("vit_small_patch16_224")
    depth = torch._C._len_torch_function_stack()
    backend = GradientXInput()
    with pytest.raises(RuntimeError, match="boom"), backend.context(model):
        assert torch._C._len_torch_function_stack() == depth + 1
        raise RuntimeError("boom")
    assert torch._C._len_torch_function_stack() == depth
    # outside the context GELU, softmax and layer norm have their native gradients again
    x = torch.randn(4, 8, requires_grad=True)
    (g_gelu,) = torch.autograd.grad(F.gelu(x).sum(), x)
    (g_ln,) = torch.autograd.grad((F.layer_norm(x, (8,)) * torch.arange(8.0)).sum(), x)
    with backend.context(model):
        (g_gelu_in,) = torch.autograd.grad(F.gelu(x).sum(), x)
        (g_ln_in,) = torch.autograd.grad((F.layer_norm(x, (8,)) * torch.arange(8.0)).sum(), x)
    assert not torch.allclose(g_gelu, g_gelu_in) and not torch.allclose(g_ln, g_ln_in)
    (g_gelu_after,) = torch.autograd.grad(F.gelu(x).sum(), x)
    (g_ln_after,) = torch.autograd.grad((F.layer_norm(x, (8,)) * torch.arange(8.0)).sum(), x)
    assert torch.equal(g_gelu, g_gelu_after) and torch.equal(g_ln, g_ln_after)


def test_rules_are_fixed_during_the_forward_so_backward_outside_is_identical(turtle_pair):
    """Detach choices are made in the forward: a backward after the context exits gives the same relevance."""
    model = _timm("swin_tiny_patch4_window7_224")
    backend = GradientXInput()
    x = turtle_pair(224)[0].clone().requires_grad_(True)
    with backend.context(model) as runner:
        emb = runner(x)
        (inside,) = torch.autograd.grad(emb.sum(), x, retain_graph=True)
    (outside,) = torch.autograd.grad(emb.sum(), x)
    assert torch.equal(inside, outside)
    (native,) = torch.autograd.grad(model(x).sum(), x)
    assert not torch.allclose(native, outside)


_CNN_EXPLANATION = """
import numpy as np, timm, torch
from pairx_plugin import PairX
torch.set_num_threads(1)
def cnn_explanation():
    torch.manual_seed(0)
    model = timm.create_model("efficientnet_b0", pretrained=False, num_classes=0).eval()
    generator = torch.Generator().manual_seed(3)
    x0, x1 = torch.randn(1, 3, 96, 96, generator=generator), torch.randn(1, 3, 96, 96, generator=generator)
    pair = PairX(model, layer_keys=["blocks.3"], k_lines=5, k_colors=2).explain_pair(x0, x1)
    layer = pair.layers["blocks.3"]
    x = x0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).square().sum(), x)  # plain autograd through SiLU and the SE gates
    return dict(cosine=np.float64(pair.cosine), rq=layer.relevance_query, rc=layer.relevance_candidate,
                pq=layer.pixel_relevance_query, pc=layer.pixel_relevance_candidate,
                cells=np.array([m.query_cell + m.candidate_cell for m in layer.matches]), grad=grad.numpy(),
                backend=np.array(pair.backend))
"""


def _cnn_explanation() -> dict:
    scope: dict = {}
    exec(_CNN_EXPLANATION, scope)
    return scope["cnn_explanation"]()


@pytest.mark.slow
def test_cnn_explanation_after_a_transformer_equals_a_fresh_process(tmp_path, turtle_pair):
    # explain a transformer (both rules) in this process first
    swin = _timm("swin_tiny_patch4_window7_224")
    x0, x1 = turtle_pair(224)
    PairX(swin, k_lines=3, k_colors=1).explain_pair(x0, x1)
    gamma_engine = PairX(swin, k_lines=3, k_colors=1)
    gamma_engine.backend = GradientXInput(linear_rule="gamma")
    gamma_engine.explain_pair(x0, x1)
    here = _cnn_explanation()
    assert str(here["backend"]) == "zennit-lrp"

    script = _CNN_EXPLANATION + f"\nnp.savez({str(tmp_path / 'fresh.npz')!r}, **cnn_explanation())\n"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "adapters")]))
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    fresh = np.load(tmp_path / "fresh.npz")
    for name in ("cosine", "rq", "rc", "pq", "pc", "cells", "grad"):
        assert np.array_equal(here[name], fresh[name]), name

    # the comparison is sensitive: with the transformer rules leaked, the CNN's gradients change.
    # (The zennit maps themselves stay equal even then: the rules keep forward values bit-exact and
    # zennit recomputes every gradient with its own rules.)
    with GradientXInput(linear_rule="gamma").context(swin):
        leaked = _cnn_explanation()
    assert not np.array_equal(leaked["grad"], fresh["grad"])


# ----------------------------------------------------------------------------- gamma rule


@pytest.mark.slow
def test_gamma_rule_conserves_and_reshapes_pixel_maps(turtle_pair):
    model = _look_trained(_timm("swin_tiny_patch4_window7_224"))
    keys = ["layers.0", "layers.2"]
    x0, x1 = turtle_pair(224)
    plain = _stage_relevance(model, GradientXInput(), keys, x0, x1)
    gamma = _stage_relevance(model, GradientXInput(linear_rule="gamma", gamma=0.25), keys, x0, x1)
    for key in keys + ["input"]:
        ratio = gamma[1][key] / gamma[0]
        assert ((ratio > 0.98) & (ratio < 1.02)).all(), (key, ratio.tolist())
    assert not torch.allclose(plain[3]["layers.0"], gamma[3]["layers.0"], rtol=1e-2, atol=1e-6)
    zero = _stage_relevance(model, GradientXInput(linear_rule="gamma", gamma=0.0), keys, x0, x1)
    torch.testing.assert_close(zero[3]["layers.0"], plain[3]["layers.0"], rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------- the engine on transformers


def _model_state(model: nn.Module):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()),
    )


def _assert_valid_layer(layer, size: int, grid: int, k_lines: int, k_colors: int):
    assert layer.relevance_query.shape == layer.relevance_candidate.shape == (grid, grid)
    for array in (
        layer.relevance_query,
        layer.relevance_candidate,
        layer.pixel_relevance_query,
        layer.pixel_relevance_candidate,
    ):
        assert np.isfinite(array).all() and array.dtype == np.float32
    assert 1 <= len(layer.matches) <= k_lines
    n = min(k_colors, len(layer.matches))
    assert layer.pixel_relevance_query.shape == layer.pixel_relevance_candidate.shape == (n, size, size)
    assert (layer.pixel_relevance_query.reshape(n, -1).sum(1) > 0).all()
    relevances = [m.relevance for m in layer.matches]
    assert relevances == sorted(relevances, reverse=True)
    for match in layer.matches:
        assert 0 <= match.query_cell[0] < grid and 0 <= match.query_cell[1] < grid
        assert 0 < match.query_xy[0] < size and 0 < match.candidate_xy[1] < size


def test_pairx_explains_a_swin_pair_end_to_end(turtle_pair):
    model = _timm("swin_tiny_patch4_window7_224")
    model.train()  # the engine must give it back in training mode
    before = _model_state(model)
    x0, x1 = turtle_pair(224)
    engine = PairX(model, k_lines=8, k_colors=3)
    assert engine.layer_keys == ["layers.2"]
    pair = engine.explain_pair(x0, x1)
    assert pair.backend == "gradient-x-input"
    model.eval()
    with torch.no_grad():
        expected = F.cosine_similarity(model(x0), model(x1)).item()
    model.train()
    assert pair.cosine == pytest.approx(expected, abs=1e-6)
    _assert_valid_layer(pair.layers["layers.2"], 224, 14, 8, 3)
    after = _model_state(model)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1:] == after[1:]
    assert torch._C._len_torch_function_stack() == 0


def test_pairx_explains_a_wrapped_dinov2_query_against_two_candidates(turtle_pair):
    model = Wrapper(_timm("vit_small_patch14_reg4_dinov2", img_size=224))
    x0, x1 = turtle_pair(224)
    engine = PairX(model, k_lines=6, k_colors=2)
    assert engine.layer_keys == ["backbone.blocks.7"]
    pairs = engine.explain_query(x0, [x1, torch.flip(x0, dims=[3])])
    assert len(pairs) == 2
    for pair in pairs:
        _assert_valid_layer(pair.layers["backbone.blocks.7"], 224, 16, 6, 2)
    # explaining a candidate batch equals explaining each pair alone
    alone = engine.explain_pair(x0, x1).layers["backbone.blocks.7"]
    np.testing.assert_allclose(
        alone.relevance_candidate, pairs[0].layers["backbone.blocks.7"].relevance_candidate, rtol=1e-4, atol=1e-7
    )


@pytest.mark.parametrize("family", ["swinv2", "convnext_timm", "convnext_torchvision", "vit", "swin_torchvision"])
def test_pairx_explains_the_other_families(family, turtle_pair):
    factory, size, _ = FAMILIES[family]
    model = factory()
    engine = PairX(model, k_lines=5, k_colors=1, input_size=size)
    key = engine.layer_keys[0]
    x0, x1 = turtle_pair(size)
    pair = engine.explain_pair(x0, x1)
    grid = size // 16
    _assert_valid_layer(pair.layers[key], size, grid, 5, 1)
    layout = type(detect_layout(model, key, model.get_submodule(key), _native_output(model, key, x0)))
    expected = {"swinv2": NHWCLayout, "swin_torchvision": NHWCLayout, "vit": TokenGridLayout}.get(family, Layout)
    assert layout is expected


def _native_output(model, key, x):
    with torch.no_grad(), capture_outputs({key: model.get_submodule(key)}) as out:
        model(x)
    return out[key]


# ----------------------------------------------------------------------------- wildlife-tools, end to end


@pytest.mark.slow
def test_wildlife_tools_pipeline_explains_every_match_of_a_megadescriptor_shaped_swin(seaturtle_dir, tmp_path):
    """Random-init MegaDescriptor-shaped Swin through DeepFeatures -> CosineSimilarity -> KnnClassifier."""
    from pairx_plugin.artifacts.schema import ExplanationArtifact
    from pairx_plugin.artifacts.store import ArtifactStore
    from pairx_plugin.models import ModelBundle
    from pairx_wildlife_tools.pipeline import load_run_settings, run_pipeline

    swin = _timm("swin_tiny_patch4_window7_224")
    bundle = ModelBundle(model=swin, input_size=224, name="megadescriptor-shaped-swin")
    settings = load_run_settings({"pairx": {"top_k": 2, "k_lines": 6, "k_colors": 2, "render": ["composite"]}})
    result = run_pipeline(
        seaturtle_dir, seaturtle_dir / "metadata.csv", settings, tmp_path, run_name="swin", progress=False, model=bundle
    )

    # 2 query images (split "test") x top 2 of the 2 database images
    assert len(result.records) == 4
    store = ArtifactStore(tmp_path)
    for record in result.records:
        assert record.explanation_error is None, record.explanation_error
        ref = record.explanation
        assert ref is not None and ref.layer == "layers.2"
        artifact = ExplanationArtifact.model_validate_json((tmp_path / ref.json_path).read_text())
        assert artifact == store.load(ref.artifact_id)
        assert artifact.backend == "gradient-x-input" and artifact.layer == "layers.2"
        assert (artifact.query_id, artifact.candidate_id) == (record.query_id, record.candidate_id)
        assert artifact.score == record.score and artifact.rank == record.rank
        assert 1 <= len(artifact.matches) <= 6
        assert artifact.cosine == pytest.approx(record.score, abs=1e-5)  # DeepFeatures' cosine, re-derived
        for file in artifact.files:
            assert (tmp_path / Path(ref.json_path).parent / file.name).is_file()


def test_gamma_backend_by_name_explains_through_the_engine(turtle_pair):
    from pairx_plugin.engine.relevance.gradient_x_input import GradientXInputGamma

    assert GradientXInputGamma.supports(_timm("vit_small_patch16_224"))
    model = _timm("swin_tiny_patch4_window7_224")
    x0, x1 = turtle_pair(224)
    plain = PairX(model, k_lines=4, k_colors=1)
    gamma = PairX(model, k_lines=4, k_colors=1)
    gamma.backend = GradientXInputGamma(mode=gamma.mode)  # what choose_backend(name=...) builds once registered
    a, b = plain.explain_pair(x0, x1), gamma.explain_pair(x0, x1)
    assert b.backend == "gradient-x-input-gamma" and b.cosine == a.cosine
    _assert_valid_layer(b.layers["layers.2"], 224, 14, 4, 1)
    assert not np.allclose(a.layers["layers.2"].relevance_query, b.layers["layers.2"].relevance_query)


def test_a_token_grid_that_does_not_fit_the_patch_grid_is_refused_by_name():
    """A dynamic-size ViT fed a non-square image: its tokens cannot be laid out on the model's grid."""
    from pairx_plugin.errors import InvalidInputError

    model = _timm("vit_small_patch16_224", dynamic_img_size=True)
    engine = PairX(model, layer_keys=["blocks.7"], k_lines=3, k_colors=1)
    generator = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(1, 3, 224, 160, generator=generator), torch.randn(1, 3, 224, 160, generator=generator)
    with pytest.raises(InvalidInputError, match=r"'blocks\.7'.*141, 384\)"):
        engine.explain_pair(x0, x1)
    assert torch._C._len_torch_function_stack() == 0


def test_parity_mode_uses_the_published_seed_with_the_same_rules(turtle_pair):
    model = _timm("vit_small_patch16_224")
    x0, x1 = turtle_pair(224)
    conservative = PairX(model, k_lines=4, k_colors=1).explain_pair(x0, x1)
    parity = PairX(model, mode="parity", k_lines=4, k_colors=1).explain_pair(x0, x1)
    assert parity.backend == conservative.backend == "gradient-x-input" and parity.mode == "parity"
    assert parity.cosine == conservative.cosine
    _assert_valid_layer(parity.layers["blocks.7"], 224, 14, 4, 1)
    assert not np.allclose(parity.layers["blocks.7"].relevance_query, conservative.layers["blocks.7"].relevance_query)
