"""Model specs and fingerprints."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch import nn

from pairx_plugin.errors import InvalidInputError
from pairx_plugin.models import ModelBundle, load_model_spec, model_fingerprint
from pairx_plugin.pretrained import IMAGENET_MEAN, IMAGENET_STD


@pytest.fixture()
def spec_module(tmp_path, monkeypatch):
    """An importable module with model factories, as a user would write one."""
    (tmp_path / "h2_user_models.py").write_text(
        textwrap.dedent("""
        import torch
        from torch import nn
        from pairx_plugin.models import ModelBundle

        class Tiny(nn.Module):
            def __init__(self):
                super().__init__()
                torch.manual_seed(0)
                self.conv = nn.Conv2d(3, 4, 3)
                self.pool = nn.AdaptiveAvgPool2d(1)

            def forward(self, x):
                return self.pool(self.conv(x)).flatten(1)

        def build():
            return Tiny().train()

        def build_bundle():
            return ModelBundle(model=Tiny(), input_size=96, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), name="tiny")

        class factories:
            tiny = staticmethod(build)

        def not_a_model():
            return 42

        NOT_CALLABLE = 3
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "h2_user_models"
    sys.modules.pop("h2_user_models", None)


def test_builtin_is_the_imagenet_lite0(lite0_imagenet):
    for spec in ("builtin", "default", None):
        bundle = load_model_spec(spec)
        assert isinstance(bundle, ModelBundle)
        assert bundle.input_size == 224 and bundle.mean == IMAGENET_MEAN and bundle.std == IMAGENET_STD
        assert not bundle.model.training
        assert model_fingerprint(bundle.model) == model_fingerprint(lite0_imagenet)


def test_timm_spec_takes_size_and_statistics_from_timm():
    bundle = load_model_spec("timm:resnet18")
    assert bundle.name == "timm:resnet18" and bundle.input_size == 224
    assert bundle.mean == IMAGENET_MEAN
    assert not bundle.model.training
    with torch.no_grad():
        assert bundle.model(torch.zeros(1, 3, 64, 64)).shape == (1, 512)  # num_classes=0: the embedding


def test_timm_weights_round_trip_and_ignore_the_removed_classifier(tmp_path):
    import timm

    torch.manual_seed(1)
    trained = timm.create_model("resnet18", pretrained=False, num_classes=10)  # with a classifier "fc"
    path = tmp_path / "resnet18.pt"
    torch.save({"state_dict": trained.state_dict(), "epoch": 3}, path)
    bundle = load_model_spec("timm:resnet18", weights=path)
    state = bundle.model.state_dict()
    torch.testing.assert_close(state["conv1.weight"], trained.state_dict()["conv1.weight"])
    assert "fc.weight" not in state
    assert model_fingerprint(bundle.model) != model_fingerprint(load_model_spec("timm:resnet18").model)


def test_mismatched_weights_name_the_keys(tmp_path):
    path = tmp_path / "lite0.pt"
    torch.save(load_model_spec("builtin").model.state_dict(), path)
    with pytest.raises(InvalidInputError, match=r"lite0\.pt.*does not fit the model: .*missing.*unexpected"):
        load_model_spec("timm:resnet18", weights=path)
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidInputError, match=r"garbage\.pt.*cannot be read"):
        load_model_spec("timm:resnet18", weights=bad)
    with pytest.raises(InvalidInputError, match=r"nothere\.pt.*not found"):
        load_model_spec("timm:resnet18", weights=tmp_path / "nothere.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(InvalidInputError, match="does not hold a state dict"):
        load_model_spec("timm:resnet18", weights=tmp_path / "list.pt")


def test_module_callable_spec(spec_module):
    bundle = load_model_spec(f"{spec_module}:build")
    assert isinstance(bundle.model, nn.Module) and not bundle.model.training  # put in eval mode
    assert bundle.input_size == 224 and bundle.name == f"{spec_module}:build"
    nested = load_model_spec(f"{spec_module}:factories.tiny")
    assert model_fingerprint(nested.model) == model_fingerprint(bundle.model)
    custom = load_model_spec(f"{spec_module}:build_bundle")
    assert (custom.input_size, custom.mean, custom.name) == (96, (0.5, 0.5, 0.5), "tiny")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty"),
        ("resnet18", "not a known name"),
        ("timm:", "no model name"),
        ("timm:no_such_net_xyz", "timm has no model named 'no_such_net_xyz'"),
        ("h2_no_such_module:build", "cannot import module 'h2_no_such_module'"),
        (":build", "needs both parts"),
        ("{mod}:missing", "has no attribute 'missing'"),
        ("{mod}:NOT_CALLABLE", "is not callable"),
        ("{mod}:not_a_model", "returned int, expected an nn.Module"),
    ],
)
def test_bad_specs_name_the_spec_and_the_accepted_forms(spec_module, spec, message):
    spec = spec.format(mod=spec_module)
    with pytest.raises(InvalidInputError, match=message) as info:
        load_model_spec(spec)
    assert repr(spec) in str(info.value)
    assert "timm:NAME" in str(info.value) and "module:callable" in str(info.value)


def test_fingerprint_follows_the_weights(spec_module):
    first = load_model_spec(f"{spec_module}:build").model
    second = load_model_spec(f"{spec_module}:build").model
    assert model_fingerprint(first) == model_fingerprint(second)
    fingerprint = model_fingerprint(first)
    assert len(fingerprint) == 64
    with torch.no_grad():
        first.conv.bias[0] += 1e-3  # an in-place change must show (no caching by id)
    assert model_fingerprint(first) != fingerprint
    half = load_model_spec(f"{spec_module}:build").model.to(torch.float16)
    assert model_fingerprint(half) != fingerprint  # dtype is part of it
