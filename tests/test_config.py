"""PairXConfig: defaults, loaders (dict, YAML/JSON file and string, sections), errors naming the key, digest."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ValidationError

from pairx_plugin.config import DIGEST_FIELDS, PairXConfig, load_config
from pairx_plugin.errors import ConfigError


def test_defaults_match_the_documented_values():
    config = PairXConfig()
    assert config.enabled is True
    assert config.layer_keys == "auto"
    assert (config.top_k, config.k_lines, config.k_colors, config.max_batch_images) == (5, 20, 10, 8)
    assert (config.mode, config.backend, config.device) == ("conservative", "auto", "auto")
    assert config.render == []  # compact artifacts: panels are drawn on demand from pair_data.npz
    assert config.display_max_side == 1024
    assert config.output_dir is None and config.keep_arrays is False


def test_load_from_dict_with_and_without_section():
    with_section = load_config({"pairx": {"k_lines": 7, "layer_keys": ["blocks.3"]}, "host_key": 1})
    without = load_config({"k_lines": 7, "layer_keys": ["blocks.3"]})
    assert with_section == without
    assert with_section.k_lines == 7 and with_section.layer_keys == ["blocks.3"]


def test_load_from_yaml_and_json_files(tmp_path):
    yaml_path = tmp_path / "host.yaml"
    yaml_path.write_text("model: x\npairx:\n  top_k: 3\n  mode: parity\n  render: [composite, overlays]\n")
    json_path = tmp_path / "host.json"
    json_path.write_text(json.dumps({"pairx": {"top_k": 3, "mode": "parity", "render": ["overlays", "composite"]}}))
    from_yaml = load_config(yaml_path)
    from_json = load_config(str(json_path))
    assert from_yaml == from_json
    assert from_yaml.top_k == 3 and from_yaml.mode == "parity"
    assert from_yaml.render == ["composite", "overlays"]  # canonical order, whatever the input order


def test_load_from_yaml_string_and_dotted_section():
    config = load_config("host:\n  pairx:\n    k_colors: 2\n", section="host.pairx")
    assert config.k_colors == 2
    assert load_config('{"k_colors": 4}').k_colors == 4
    assert load_config(None) == PairXConfig()
    assert load_config("") == PairXConfig()


def test_a_single_layer_key_string_becomes_a_list():
    assert load_config({"layer_keys": "layer3"}).layer_keys == ["layer3"]


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"k_lines": 0}, "pairx.k_lines: must be >= 1, got 0"),
        ({"top_k": -2}, "pairx.top_k: must be >= 1, got -2"),
        ({"k_colors": True}, "pairx.k_colors:"),
        ({"max_batch_images": "many"}, "pairx.max_batch_images:"),
        ({"mode": "fast"}, "pairx.mode: must be one of"),
        ({"backend": "gradcam"}, "pairx.backend: must be one of"),
        ({"device": "gpu0"}, "pairx.device: must be auto, cpu, cuda or cuda:N"),
        ({"device": "cuda:x"}, "pairx.device:"),
        ({"layer_keys": []}, "pairx.layer_keys: must not be empty"),
        ({"layer_keys": ["blocks.3", "blocks.3"]}, "pairx.layer_keys: duplicate layer keys"),
        ({"layer_keys": ["", "x"]}, "pairx.layer_keys: every layer key must be a non-empty string"),
        ({"layer_keys": 3}, "pairx.layer_keys:"),
        ({"render": ["composite", "sparkles"]}, "pairx.render.1: must be one of"),
        ({"output_dir": 12}, "pairx.output_dir:"),
        ({"keep_arrays": "perhaps"}, "pairx.keep_arrays:"),
    ],
)
def test_bad_values_name_the_key(values, fragment):
    with pytest.raises(ConfigError) as info:
        load_config({"pairx": values})
    assert fragment in str(info.value)
    key = next(iter(values))
    assert f"pairx.{key}" in str(info.value)


def test_unknown_keys_are_named_with_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        load_config({"pairx": {"k_line": 3, "top_k": 2}})
    message = str(info.value)
    assert "pairx.k_line: unknown key" in message and "k_lines" in message


def test_several_problems_are_all_reported_and_the_host_section_is_named():
    with pytest.raises(ConfigError) as info:
        load_config({"host": {"pairx": {"k_lines": 0, "colour": "red"}}}, section="host.pairx")
    message = str(info.value)
    assert "host.pairx.k_lines: must be >= 1, got 0" in message
    assert "host.pairx.colour: unknown key" in message


def test_direct_construction_raises_config_error_too():
    with pytest.raises(ConfigError, match=r"pairx\.top_k: must be >= 1, got 0"):
        PairXConfig(top_k=0)


def test_a_host_model_can_embed_the_config():
    class HostConfig(BaseModel):
        name: str
        pairx: PairXConfig = PairXConfig()

    assert HostConfig(name="h", pairx={"k_lines": 4}).pairx.k_lines == 4
    with pytest.raises(ValidationError, match=r"pairx\.k_lines: must be >= 1"):
        HostConfig(name="h", pairx={"k_lines": 0})


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("/nonexistent/dir/pairx.yaml", "does not exist"),
        ("pairx: [unclosed", "not valid YAML/JSON"),
        ("- just\n- a list\n", "must be a mapping"),
        (42, "cannot load a PAIR-X configuration from int"),
        ({"pairx": [1, 2]}, "pairx: must be a mapping"),
    ],
)
def test_unreadable_sources_say_what_is_wrong(source, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(source)


def test_digest_changes_with_artifact_fields_only():
    base = PairXConfig()
    for field, value in [
        ("k_lines", 3),
        ("k_colors", 3),
        ("mode", "parity"),
        ("backend", "zennit-lrp"),
        ("render", ["composite"]),
        ("keep_arrays", True),
    ]:
        assert field in DIGEST_FIELDS
        assert base.model_copy(update={field: value}).digest() != base.digest(), field
    for field, value in [
        ("enabled", False),
        ("output_dir", "/tmp/x"),
        ("device", "cpu"),
        ("max_batch_images", 1),
        ("top_k", 9),
        ("layer_keys", ["blocks.3"]),
    ]:
        assert load_config({field: value}).digest() == base.digest(), field
    assert len(base.digest()) == 64 and int(base.digest(), 16) >= 0


def test_digest_ignores_render_order_and_duplicates():
    a = load_config({"render": ["overlays", "composite", "composite"]})
    b = load_config({"render": ["composite", "overlays"]})
    assert a.render == b.render and a.digest() == b.digest()


def test_config_is_immutable():
    config = PairXConfig()
    with pytest.raises(ValidationError):
        config.k_lines = 3  # type: ignore[misc]


def test_checked_in_json_schema_accepts_and_rejects_like_the_model(shared_dir):
    import jsonschema

    from pairx_plugin.artifacts.schema import json_schemas

    schema = json_schemas()["pairx_config.schema.json"]
    jsonschema.validate(PairXConfig().model_dump(mode="json"), schema)
    jsonschema.validate({"layer_keys": "auto", "k_lines": 3}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"k_lines": 0}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"colour": "red"}, schema)


# --------------------------------------------------------------------------- hostile YAML (issue 11, item 4)


def _alias_bomb(levels: int, key: str = "k_lines") -> str:
    """The classic "billion laughs" in YAML: each level is nine aliases of the previous one."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join([*lines, "pairx:", f"  {key}: *a{levels - 1}"]) + "\n"


@pytest.mark.parametrize("levels", [6, 7])
def test_a_yaml_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path, levels):
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb(levels), encoding="utf-8")
    assert len(path.read_bytes()) < 450
    with pytest.raises(ConfigError, match="possible alias bomb") as caught:
        load_config(path)
    assert len(str(caught.value)) < 400 and str(path) in str(caught.value)


def test_an_offending_value_is_echoed_in_at_most_about_200_characters():
    with pytest.raises(ConfigError, match=r"^pairx\.k_lines: must be a valid integer, got \[\[") as caught:
        load_config(_alias_bomb(3))  # 729 strings: small enough to load, far too long to echo
    message = str(caught.value)
    assert len(message) < 300, message
    with pytest.raises(ConfigError) as caught:
        load_config({"mode": "x" * 100_000})
    assert len(str(caught.value)) < 300 and "xxx...xxx" in str(caught.value)


def test_a_recursive_yaml_alias_is_refused():
    with pytest.raises(ConfigError, match="refers to itself"):
        load_config("pairx:\n  layer_keys: &a [*a]\n")


def test_load_yaml_is_the_one_reader_and_keeps_ordinary_aliases():
    from pairx_plugin.config import load_yaml

    document = load_yaml("base: &b {k_lines: 3}\npairx: *b\nlist: [1, 2]\n")
    assert document == {"base": {"k_lines": 3}, "pairx": {"k_lines": 3}, "list": [1, 2]}
    assert load_config("base: &b {k_lines: 3}\npairx: *b\n").k_lines == 3
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml("a: [1, 2", origin="x.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml("!!python/object:os.system {}")  # safe types only
