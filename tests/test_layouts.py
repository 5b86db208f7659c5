"""Layout adapters (NHWC Swin stages, ViT token sequences) against timm's own ``forward_intermediates``."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn

from pairx_plugin.engine.layouts import (
    Layout,
    NHWCLayout,
    TokenGridLayout,
    default_layer_hint,
    detect_layout,
)
from pairx_plugin.errors import InvalidInputError

torch.set_num_threads(1)


def _timm(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=0, **kwargs).eval()


def _outputs(model: nn.Module, keys: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Native outputs of the named submodules for one forward."""
    found: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = [modules[k].register_forward_hook(lambda m, i, o, k=k: found.__setitem__(k, o)) for k in keys]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return found


def _layouts(model: nn.Module, outputs: dict[str, torch.Tensor]) -> dict[str, Layout | None]:
    modules = dict(model.named_modules())
    return {k: detect_layout(model, k, modules[k], v) for k, v in outputs.items()}


class Wrapper(nn.Module):
    """A host model that keeps its backbone as ``.backbone`` (wildlife-tools / MiewID style)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


@pytest.mark.parametrize(
    ("name", "kwargs", "size"),
    [("swin_tiny_patch4_window7_224", {}, 224), ("swinv2_tiny_window8_256", {}, 256)],
)
def test_swin_stages_are_nhwc_and_match_forward_intermediates(name, kwargs, size):
    model = _timm(name, **kwargs)
    x = torch.randn(1, 3, size, size)
    keys = [f"layers.{i}" for i in range(4)]
    outputs = _outputs(model, keys, x)
    layouts = _layouts(model, outputs)
    with torch.no_grad():
        reference = model.forward_intermediates(x, indices=[0, 1, 2, 3], norm=False, intermediates_only=True)
    for key, expected in zip(keys, reference):
        assert isinstance(layouts[key], NHWCLayout), key
        nchw = layouts[key].to_nchw(outputs[key])
        assert nchw.shape == expected.shape
        assert torch.equal(nchw, expected), key
        assert torch.equal(layouts[key].from_nchw(nchw, outputs[key]), outputs[key])
    # the patch-embedding convolution inside a Swin is still NCHW
    conv_out = _outputs(model, ["patch_embed.proj"], x)["patch_embed.proj"]
    conv_layout = detect_layout(model, "patch_embed.proj", model.patch_embed.proj, conv_out)
    assert type(conv_layout) is Layout


@pytest.mark.parametrize(
    ("name", "kwargs", "prefix_tokens"),
    [("vit_small_patch16_224", {}, 1), ("vit_small_patch14_reg4_dinov2", {"img_size": 224}, 5)],
)
def test_vit_blocks_are_tokens_and_match_forward_intermediates(name, kwargs, prefix_tokens):
    model = _timm(name, **kwargs)
    assert model.num_prefix_tokens == prefix_tokens
    x = torch.randn(1, 3, 224, 224)
    indices = [0, 7, 11]
    keys = [f"blocks.{i}" for i in indices]
    outputs = _outputs(model, keys, x)
    layouts = _layouts(model, outputs)
    with torch.no_grad():
        reference = model.forward_intermediates(
            x, indices=indices, norm=False, output_fmt="NCHW", intermediates_only=True
        )
    for key, expected in zip(keys, reference):
        layout = layouts[key]
        assert isinstance(layout, TokenGridLayout), key
        assert layout.num_prefix_tokens == prefix_tokens
        assert layout.grid_size == tuple(model.patch_embed.grid_size)
        nchw = layout.to_nchw(outputs[key])
        assert nchw.shape == expected.shape == (1, model.embed_dim, *model.patch_embed.grid_size)
        assert torch.equal(nchw, expected), key
        back = layout.from_nchw(nchw, outputs[key])
        assert back.shape == outputs[key].shape
        assert torch.equal(back[:, prefix_tokens:], outputs[key][:, prefix_tokens:])
        assert torch.count_nonzero(back[:, :prefix_tokens]) == 0  # prefix tokens get zeros


def test_convnext_stages_stay_nchw_and_match_forward_intermediates():
    model = _timm("convnext_tiny")
    x = torch.randn(1, 3, 224, 224)
    keys = [f"stages.{i}" for i in range(4)]
    outputs = _outputs(model, keys, x)
    layouts = _layouts(model, outputs)
    with torch.no_grad():
        reference = model.forward_intermediates(x, indices=[0, 1, 2, 3], norm=False, intermediates_only=True)
    for key, expected in zip(keys, reference):
        assert type(layouts[key]) is Layout
        assert torch.equal(layouts[key].to_nchw(outputs[key]), expected)


def test_torchvision_swin_features_are_nhwc_and_final_permute_is_nchw():
    torch.manual_seed(0)
    model = torchvision.models.swin_t().eval()
    x = torch.randn(1, 3, 224, 224)
    outputs = _outputs(model, ["features.5", "norm", "permute", "features.0.0"], x)
    layouts = _layouts(model, outputs)
    assert isinstance(layouts["features.5"], NHWCLayout)
    assert isinstance(layouts["norm"], NHWCLayout)
    assert type(layouts["permute"]) is Layout  # Permute([0, 3, 1, 2]) hands NCHW to the pooling
    assert type(layouts["features.0.0"]) is Layout  # the patch convolution
    assert torch.equal(layouts["norm"].to_nchw(outputs["norm"]), outputs["permute"])


def test_layouts_look_through_a_backbone_wrapper():
    swin = Wrapper(_timm("swin_tiny_patch4_window7_224"))
    vit = Wrapper(_timm("vit_small_patch14_reg4_dinov2", img_size=224))
    x = torch.randn(1, 3, 224, 224)
    swin_out = _outputs(swin, ["backbone.layers.2"], x)
    vit_out = _outputs(vit, ["backbone.blocks.7"], x)
    assert isinstance(_layouts(swin, swin_out)["backbone.layers.2"], NHWCLayout)
    token_layout = _layouts(vit, vit_out)["backbone.blocks.7"]
    assert isinstance(token_layout, TokenGridLayout) and token_layout.num_prefix_tokens == 5
    assert default_layer_hint(swin) == "backbone.layers.2"
    assert default_layer_hint(vit) == "backbone.blocks.7"


def test_patch_embedding_tokens_have_no_prefix():
    model = _timm("vit_small_patch16_224")
    x = torch.randn(1, 3, 224, 224)
    out = _outputs(model, ["patch_embed"], x)["patch_embed"]
    layout = detect_layout(model, "patch_embed", model.patch_embed, out)
    assert isinstance(layout, TokenGridLayout) and layout.num_prefix_tokens == 0
    assert layout.to_nchw(out).shape == (1, model.embed_dim, 14, 14)


@pytest.mark.parametrize(
    ("factory", "size", "expected", "grid"),
    [
        (lambda: _timm("swin_tiny_patch4_window7_224"), 224, "layers.2", 14),
        (lambda: _timm("swinv2_tiny_window8_256"), 256, "layers.2", 16),
        (lambda: _timm("vit_small_patch16_224"), 224, "blocks.7", 14),
        (lambda: _timm("vit_small_patch14_reg4_dinov2", img_size=224), 224, "blocks.7", 16),
        (lambda: _timm("convnext_tiny"), 224, "stages.2", 14),
        (lambda: torchvision.models.convnext_tiny(), 224, "features.5", 14),
        (lambda: torchvision.models.swin_t(), 224, "features.5", 14),
        (lambda: _timm("resnet18"), 224, None, None),
    ],
)
def test_default_layer_hint_per_family(factory, size, expected, grid):
    model = factory().eval()
    hint = default_layer_hint(model)
    assert hint == expected
    if hint is not None:
        # the hint names a real submodule whose map is the stride-16 (or patch) grid
        out = _outputs(model, [hint], torch.randn(1, 3, size, size))[hint]
        layout = detect_layout(model, hint, dict(model.named_modules())[hint], out)
        assert layout is not None
        assert tuple(layout.to_nchw(out).shape[-2:]) == (grid, grid)


def test_hint_depth_scales_with_vit_depth():
    torch.manual_seed(0)
    tiny = timm.create_model("vit_tiny_patch16_224", num_classes=0, depth=6)
    assert default_layer_hint(tiny) == "blocks.3"


def test_unknown_outputs_get_no_layout():
    model = _timm("vit_small_patch16_224")
    head = nn.Identity()
    assert detect_layout(model, "head", head, torch.randn(1, 384)) is None
    assert detect_layout(model, "blocks.0", model.blocks[0], torch.randn(1, 50, 384)) is None  # 50 != 1 + 14*14
    assert detect_layout(model, "blocks.0", model.blocks[0], (torch.randn(1, 197, 384),)) is None


def test_token_layout_rejects_wrong_token_count_with_a_clear_error():
    layout = TokenGridLayout(1, (14, 14))
    with pytest.raises(InvalidInputError, match=r"196|14x14"):
        layout.to_nchw(torch.randn(1, 100, 8))
    with pytest.raises(InvalidInputError, match="token sequence"):
        layout.to_nchw(torch.randn(1, 8, 14, 14))
    with pytest.raises(InvalidInputError, match="does not fit"):
        layout.from_nchw(torch.randn(1, 8, 7, 7), torch.randn(1, 197, 8))


def test_nhwc_layout_rejects_mismatched_maps_with_a_clear_error():
    layout = NHWCLayout()
    with pytest.raises(InvalidInputError, match="NHWC"):
        layout.to_nchw(torch.randn(1, 7, 7))
    with pytest.raises(InvalidInputError, match="does not match"):
        layout.from_nchw(torch.randn(1, 8, 7, 7), torch.randn(1, 14, 14, 8))


@pytest.mark.parametrize(
    ("factory", "default", "layout", "shape"),
    [
        (lambda: _timm("swin_tiny_patch4_window7_224"), "layers.2", "nhwc", (384, 14, 14)),
        (lambda: _timm("vit_small_patch14_reg4_dinov2", img_size=224), "blocks.7", "tokens", (384, 16, 16)),
    ],
)
def test_list_layers_shows_the_family_default_with_its_layout(factory, default, layout, shape):
    """What ``pairx-plugin layers`` prints: the hinted layer is the default, in NCHW terms."""
    from pairx_plugin.engine.layers import default_layer_key, list_layers

    model = factory()
    infos = {info.key: info for info in list_layers(model, 224)}
    assert [k for k, info in infos.items() if info.is_default] == [default]
    assert infos[default].layout == layout and infos[default].output_shape == shape
    assert default_layer_key(model, 224) == default
