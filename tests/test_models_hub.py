"""Model specs for published checkpoints, each format built here with seeded random weights.

``local-dir:`` (timm's save_for_hf), ``hf-hub:`` (a Hugging Face cache laid out as huggingface_hub
does, with HF_HUB_OFFLINE set), ``transformers:`` (a small model with its own modeling code, like
MiewID's) and ``miewid[BACKBONE]:`` (a WBIA MiewIdNet state dict). For each: the weights arrive
bit-identical, the preprocessing comes from the checkpoint's own config, and PAIR-X's explained
cosine equals the model's own cosine.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
import torch.nn.functional as F

from pairx_plugin.errors import InvalidInputError
from pairx_plugin.models import load_model_spec

MEAN, STD = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)


def _assert_explained_cosine_is_the_models(bundle, seed: int = 0) -> None:
    from pairx_plugin.engine.engine import PairX

    generator = torch.Generator().manual_seed(seed)
    size = bundle.input_size
    x0, x1 = (torch.randn(1, 3, size, size, generator=generator) for _ in range(2))
    with torch.no_grad():
        own = float(F.cosine_similarity(bundle.model(x0), bundle.model(x1)).item())
    explained = PairX(bundle.model, k_lines=5, k_colors=1, input_size=size).explain_pair(x0, x1).cosine
    assert abs(explained - own) <= 1e-4, (explained, own)


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def _timm_folder(folder, seed: int = 0):
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(seed)
    model = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    save_for_hf(model, str(folder), data_config={"input_size": (3, 96, 96), "mean": MEAN, "std": STD})
    return model


# --------------------------------------------------------------------------- timm local-dir / hf-hub


@pytest.mark.slow
def test_local_dir_spec_loads_timm_save_for_hf(tmp_path):
    original = _timm_folder(tmp_path / "resnet")
    bundle = load_model_spec(f"local-dir:{tmp_path / 'resnet'}")
    assert _same_state(bundle.model, original) and not bundle.model.training
    assert (bundle.input_size, bundle.mean, bundle.std) == (96, MEAN, STD)  # from the folder's config.json
    _assert_explained_cosine_is_the_models(bundle)


def _fake_hub_cache(cache, repo_id: str, build) -> None:
    """huggingface_hub's cache layout: models--ORG--NAME/{refs/main, snapshots/<commit>/...}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    build(repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


@pytest.mark.slow
def test_hf_hub_spec_loads_from_the_local_cache_only(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    holder = {}
    _fake_hub_cache(cache, "pairx-test/tiny-resnet", lambda folder: holder.setdefault("model", _timm_folder(folder, 1)))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bundle = load_model_spec("hf-hub:pairx-test/tiny-resnet")
    assert _same_state(bundle.model, holder["model"])
    assert (bundle.input_size, bundle.mean, bundle.std, bundle.name) == (96, MEAN, STD, "hf-hub:pairx-test/tiny-resnet")
    _assert_explained_cosine_is_the_models(bundle, seed=1)


def test_hf_hub_spec_not_cached_names_the_cache_and_the_fetch_command(tmp_path, monkeypatch, capsys):
    from pairx_plugin import cli

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    code = cli.main(["layers", "--model", "hf-hub:BVRA/MegaDescriptor-T-224"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"BVRA/MegaDescriptor-T-224 is not in the Hugging Face cache at {str(tmp_path / 'empty-cache')!r}" in err
    assert "`hf download BVRA/MegaDescriptor-T-224`" in err and "never downloads" in err
    assert "Traceback" not in err
    with pytest.raises(InvalidInputError, match="is not a hub id of the form ORG/NAME"):
        load_model_spec("hf-hub:../../etc")
    with pytest.raises(InvalidInputError, match="carry their own weights"):
        load_model_spec("hf-hub:BVRA/MegaDescriptor-T-224", weights=tmp_path / "w.pt")
    with pytest.raises(InvalidInputError, match="folder .* does not exist"):
        load_model_spec(f"local-dir:{tmp_path / 'nowhere'}")


# --------------------------------------------------------------------------- transformers with custom code

CONFIGURATION = """
from transformers import PretrainedConfig


class TinyReidConfig(PretrainedConfig):
    model_type = "pairx_tiny_reid"

    def __init__(self, width=8, embedding=16, **kwargs):
        self.width = width
        self.embedding = embedding
        super().__init__(**kwargs)
"""

MODELING = '''
import torch
from torch import nn
from transformers import PreTrainedModel

from .configuration_tiny_reid import TinyReidConfig


class TinyReidModel(PreTrainedModel):
    """A MiewID-like custom model: conv trunk, GeM pooling, BatchNorm1d neck; returns a dict."""

    config_class = TinyReidConfig
    base_model_prefix = "reid"

    def __init__(self, config):
        super().__init__(config)
        self.backbone = nn.Sequential(
            nn.Conv2d(3, config.width, 3, padding=1), nn.BatchNorm2d(config.width), nn.ReLU(),
            nn.Conv2d(config.width, config.embedding, 3, stride=2, padding=1),
            nn.BatchNorm2d(config.embedding),
            nn.ReLU(),
            nn.Conv2d(config.embedding, config.embedding, 3, padding=1), nn.ReLU(),
        )
        self.p = nn.Parameter(torch.ones(1) * 3.0)
        self.bn = nn.BatchNorm1d(config.embedding)
        self.post_init()

    def _init_weights(self, module):
        pass

    def forward(self, pixel_values):
        features = self.backbone(pixel_values).clamp(min=1e-6).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)
        return {"pooler_output": self.bn(features), "feature_map": None}
'''


def _custom_code_folder(folder) -> dict:
    """Config, code and seeded weights of a custom-code transformers model; returns its state dict."""
    import importlib.util
    import sys

    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "configuration_tiny_reid.py").write_text(textwrap.dedent(CONFIGURATION))
    (folder / "modeling_tiny_reid.py").write_text(textwrap.dedent(MODELING))
    (folder / "__init__.py").write_text("")
    config = {
        "model_type": "pairx_tiny_reid",
        "architectures": ["TinyReidModel"],
        "width": 8,
        "embedding": 16,
        "auto_map": {
            "AutoConfig": "configuration_tiny_reid.TinyReidConfig",
            "AutoModel": "modeling_tiny_reid.TinyReidModel",
        },
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"size": {"height": 80, "width": 80}, "image_mean": list(MEAN), "image_std": list(STD)})
    )
    # build the weights with the same code, imported as a throwaway package
    spec = importlib.util.spec_from_file_location(
        "pairx_test_tiny_reid", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules["pairx_test_tiny_reid"] = package
    try:
        from pairx_test_tiny_reid.configuration_tiny_reid import TinyReidConfig
        from pairx_test_tiny_reid.modeling_tiny_reid import TinyReidModel

        torch.manual_seed(3)
        model = TinyReidModel(TinyReidConfig(width=8, embedding=16))
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if "running_var" in name:
                    tensor.uniform_(0.5, 2.0)
                elif "running_mean" in name or name.endswith("bias"):
                    tensor.normal_(0, 0.1)
        state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
    finally:
        for name in [n for n in sys.modules if n.startswith("pairx_test_tiny_reid")]:
            del sys.modules[name]
    return state


@pytest.mark.slow
def test_transformers_custom_code_needs_the_opt_in_and_then_explains(tmp_path):
    folder = tmp_path / "tiny-reid"
    state = _custom_code_folder(folder)
    with pytest.raises(InvalidInputError, match=r"needs its own Python code to run .*--trust-remote-code"):
        load_model_spec(f"transformers:{folder}")
    bundle = load_model_spec(f"transformers:{folder}", trust_remote_code=True)
    loaded = {k.removeprefix("model."): v for k, v in bundle.model.state_dict().items()}
    assert list(loaded) == list(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    assert (bundle.input_size, bundle.mean, bundle.std) == (80, MEAN, STD)  # preprocessor_config.json
    assert not bundle.model.training
    x = torch.randn(2, 3, 80, 80)
    with torch.no_grad():  # the output rule: the dict's pooler_output is the embedding
        assert torch.equal(bundle.model(x), bundle.model.model(x)["pooler_output"])
    _assert_explained_cosine_is_the_models(bundle, seed=3)


@pytest.mark.slow
def test_cli_trust_remote_code_flag(tmp_path, capsys):
    from pairx_plugin import cli

    folder = tmp_path / "tiny-reid"
    _custom_code_folder(folder)
    assert cli.main(["layers", "--model", f"transformers:{folder}"]) == 2
    assert "pass --trust-remote-code" in capsys.readouterr().err
    assert cli.main(["layers", "--model", f"transformers:{folder}", "--trust-remote-code"]) == 0
    assert "model.backbone" in capsys.readouterr().out


def test_transformers_spec_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(InvalidInputError, match="conservationxlabs/miewid-msv3 is not in the Hugging Face cache"):
        load_model_spec("transformers:conservationxlabs/miewid-msv3", trust_remote_code=True)
    (tmp_path / "no-config").mkdir()
    with pytest.raises(InvalidInputError, match="has no config.json"):
        load_model_spec(f"transformers:{tmp_path / 'no-config'}")
    with pytest.raises(InvalidInputError, match="neither a folder nor a hub id"):
        load_model_spec(f"transformers:{tmp_path / 'missing'}")


def test_embedding_rule_refuses_what_is_not_an_embedding():
    from pairx_plugin.models_hub import EmbeddingOutput

    class Maps(torch.nn.Module):
        def forward(self, x):
            return {"last_hidden_state": x}

    class Pairs(torch.nn.Module):
        def forward(self, x):
            return (x.mean(dim=(2, 3)), x)

    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(EmbeddingOutput(Pairs())(x), x.mean(dim=(2, 3)))
    with pytest.raises(InvalidInputError, match=r"does not reduce to a \(B, D\) embedding"):
        EmbeddingOutput(Maps())(x)


# --------------------------------------------------------------------------- WBIA MiewIdNet checkpoints


def _miewid_checkpoint(path, *, extra=None, drop=None, config=None):
    from pairx_plugin.models_miewid import miewid_model

    torch.manual_seed(5)
    model = miewid_model("resnet18")
    with torch.no_grad():
        model.pooling.p.fill_(2.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    state = dict(model.state_dict())
    state["final.weight"] = torch.randn(10, 512)  # WBIA's training-only margin head
    state.update(extra or {})
    for key in drop or []:
        del state[key]
    torch.save({"state_dict": state, **({"config": config} if config else {})}, path)
    return model


@pytest.mark.slow
def test_miewid_checkpoint_loads_strictly_with_its_own_preprocessing(tmp_path):
    original = _miewid_checkpoint(tmp_path / "miewid.bin", config={"data": {"image_size": [96, 96]}, "mean": MEAN})
    bundle = load_model_spec(f"miewid[resnet18]:{tmp_path / 'miewid.bin'}")
    assert _same_state(bundle.model, original)
    assert float(bundle.model.pooling.p.detach()) == 2.5
    assert (bundle.input_size, bundle.mean) == (96, MEAN)
    _assert_explained_cosine_is_the_models(bundle, seed=5)


def test_miewid_checkpoint_key_mismatches_are_named(tmp_path):
    _miewid_checkpoint(tmp_path / "extra.bin", extra={"neck.weight": torch.zeros(3)})
    with pytest.raises(InvalidInputError, match=r"1 unexpected \(e.g. \['neck.weight'\]\)"):
        load_model_spec(f"miewid[resnet18]:{tmp_path / 'extra.bin'}")
    _miewid_checkpoint(tmp_path / "missing.bin", drop=["bn.running_var"])
    with pytest.raises(InvalidInputError, match=r"1 missing \(e.g. \['bn.running_var'\]\)"):
        load_model_spec(f"miewid[resnet18]:{tmp_path / 'missing.bin'}")
    with pytest.raises(InvalidInputError, match="does not fit MiewIdNet on backbone 'resnet34'"):
        load_model_spec(f"miewid[resnet34]:{tmp_path / 'extra.bin'}")
    with pytest.raises(InvalidInputError, match="MiewID backbone 'no_such_net' is not a timm model"):
        load_model_spec(f"miewid[no_such_net]:{tmp_path / 'extra.bin'}")
    with pytest.raises(InvalidInputError, match="MiewID checkpoint .* not found"):
        load_model_spec(f"miewid:{tmp_path / 'nope.bin'}")


@pytest.mark.slow
def test_the_benchmarks_miewid_model_round_trips_through_a_wbia_checkpoint(tmp_path):
    """The default spec (``miewid:PATH``, efficientnetv2_rw_m) fits the model the benchmarks build."""
    from benchmarks.reference_models import miewid_like

    original = miewid_like(seed=2)
    state = dict(original.state_dict())
    state["final.weight"] = torch.zeros(4, state["bn.weight"].shape[0])
    torch.save(state, tmp_path / "miewid.bin")
    bundle = load_model_spec(f"miewid:{tmp_path / 'miewid.bin'}")
    assert _same_state(bundle.model, original) and type(bundle.model) is type(original)
    assert (bundle.input_size, bundle.mean) == (440, (0.485, 0.456, 0.406))  # WBIA's MiewID setting
