"""Bad input gives a clear pairx error that names the problem; nothing else is affected."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pairx_plugin import PairX
from pairx_plugin.errors import (
    InvalidInputError,
    LayerNotFoundError,
    PairXError,
    UnsupportedModelError,
)


class Scaled(nn.Module):
    """Wraps a model and multiplies its embedding (0 -> zero norm, nan -> NaN)."""

    def __init__(self, inner: nn.Module, factor: float):
        super().__init__()
        self.inner = inner
        self.factor = factor

    def forward(self, x):
        return self.inner(x) * self.factor


@pytest.fixture(scope="module")
def engine(lite0_imagenet):
    return PairX(lite0_imagenet, layer_keys=["blocks.3"], k_lines=4, k_colors=1)


@pytest.fixture(scope="module")
def x():
    return torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.randn(3, 96, 96), r"shape \(1, 3, H, W\)"),
        (torch.randn(2, 3, 96, 96), r"one image"),
        (torch.randn(1, 1, 96, 96), r"shape \(1, 3, H, W\)"),
        (torch.randn(1, 3, 96, 96, dtype=torch.float64), r"dtype torch.float64"),
        (torch.zeros(1, 3, 96, 96, dtype=torch.uint8), r"dtype torch.uint8"),
        (torch.full((1, 3, 96, 96), float("nan")), r"NaN"),
        (torch.randn(1, 3, 4, 4), r"too small"),
        (torch.randn(1, 3, 96, 96, device="meta"), r"is on meta"),
        ("not a tensor", r"torch.Tensor"),
    ],
)
def test_bad_query_tensor(engine, x, bad, message):
    with pytest.raises(InvalidInputError, match=message):
        engine.explain_pair(bad, x)
    with pytest.raises(InvalidInputError, match=message.replace("query", "candidates")):
        engine.explain_pair(x, bad)


def test_size_mismatch_between_query_and_candidate(engine, x):
    with pytest.raises(InvalidInputError, match=r"candidates\[0\] has shape .* but the query"):
        engine.explain_pair(x, torch.randn(1, 3, 128, 128))


def test_empty_and_non_list_candidates(engine, x):
    with pytest.raises(InvalidInputError, match="candidates is empty"):
        engine.explain_query(x, [])
    with pytest.raises(InvalidInputError, match="list of"):
        engine.explain_query(x, x)


@pytest.mark.parametrize("field", ["k_lines", "k_colors", "max_batch_images", "max_batch_pixels"])
@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_bad_k_values(lite0_imagenet, field, value):
    with pytest.raises(InvalidInputError, match=field):
        PairX(lite0_imagenet, layer_keys=["blocks.3"], **{field: value})


def test_bad_mode_and_model(lite0_imagenet):
    with pytest.raises(InvalidInputError, match="mode"):
        PairX(lite0_imagenet, layer_keys=["blocks.3"], mode="fast")
    with pytest.raises(InvalidInputError, match="torch.nn.Module"):
        PairX(lambda x: x, layer_keys=["blocks.3"])


def test_wrong_layer_key_names_closest(lite0_imagenet):
    with pytest.raises(LayerNotFoundError, match=r"'block.3' not found.*closest existing keys: \['blocks.3'"):
        PairX(lite0_imagenet, layer_keys=["block.3"])


def test_zero_norm_and_nan_embeddings(lite0_imagenet, x):
    for factor, message in [(0.0, "zero norm"), (float("nan"), "NaN")]:
        engine = PairX(Scaled(lite0_imagenet, factor), layer_keys=["inner.blocks.3"], k_lines=3, k_colors=1)
        with pytest.raises(InvalidInputError, match=f"embedding of query .*{message}"):
            engine.explain_pair(x, x * 0.5)


def test_one_bad_candidate_costs_only_its_slot(engine, x):
    results = engine.explain_query(x, [x * 0.9, torch.randn(1, 3, 50, 50), x * 1.1], return_exceptions=True)
    assert isinstance(results[1], InvalidInputError)
    assert results[0].layers["blocks.3"].matches and results[2].layers["blocks.3"].matches


def test_unsupported_architecture_names_the_model(x):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 96 * 96, 8))
    with pytest.raises(UnsupportedModelError, match="Sequential"):
        PairX(mlp, layer_keys=["1"])


def test_parity_mode_rejects_families_the_published_code_lacks(x):
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    engine = PairX(model, layer_keys=["2"], k_lines=3, k_colors=1, mode="parity")
    with pytest.raises(UnsupportedModelError, match="parity mode"):
        engine.explain_pair(x, x * 0.5)
    # the conservative mode explains the same plain CNN
    result = PairX(model, layer_keys=["2"], k_lines=3, k_colors=1).explain_pair(x, x * 0.5)
    assert isinstance(result.cosine, float)


def test_all_errors_share_one_base(engine):
    assert issubclass(InvalidInputError, PairXError) and issubclass(UnsupportedModelError, PairXError)


def test_cnn_with_a_fixed_size_head_is_canonized_at_its_size():
    """A model that rejects small inputs (flatten + Linear for 224 px) still gets its BN merged."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=4, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=4, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 14 * 14, 16),
    ).eval()
    from pairx_plugin.engine.conservation import conservation

    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    c0, c1 = conservation(model, x[:1], x[1:], "3")
    assert 0.98 <= c0 <= 1.02 and 0.98 <= c1 <= 1.02


@pytest.mark.parametrize("value", [-1, 2.5, True, "many"])
def test_bad_pixel_rows(lite0_imagenet, value):
    with pytest.raises(InvalidInputError, match="pixel_rows"):
        PairX(lite0_imagenet, layer_keys=["blocks.3"], pixel_rows=value)
