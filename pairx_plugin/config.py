"""``PairXConfig``: the settings a host pipeline embeds in its own configuration, and its loaders.

A host keeps a ``pairx:`` section in its YAML/JSON/dict configuration; :func:`load_config` takes that
section (or a whole document that is only the section) and returns a validated ``PairXConfig``.
Every problem is reported as :class:`~pairx_plugin.errors.ConfigError` whose message starts with the
dotted key (``pairx.k_lines: must be >= 1, got 0``), so a user can find the line to fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError
from .evidence.models import RerankConfig

if TYPE_CHECKING:  # torch is imported only when a device is actually resolved
    import torch
    from torch import nn

PanelKind = Literal["composite", "only_lines", "only_colors", "heatmaps", "overlays", "display"]

#: every panel kind, in the canonical order used for ``render`` (and therefore for the digest)
ALL_PANELS: tuple[PanelKind, ...] = ("composite", "only_lines", "only_colors", "heatmaps", "overlays", "display")

#: fields that change what one artifact contains; ``digest()`` hashes exactly these. Left out on
#: purpose: ``enabled``, ``output_dir``, ``device`` and ``max_batch_images`` (where and how fast, not
#: what), ``top_k`` (which records get explained, not what one explanation holds) and ``layer_keys``
#: (the resolved layer key is part of the artifact id on its own, so "auto" and the key it resolves to
#: share artifacts).
DIGEST_FIELDS: tuple[str, ...] = (
    "k_lines",
    "k_colors",
    "mode",
    "backend",
    "render",
    "keep_arrays",
    "display_max_side",
    "lines",
)

#: Every accepted device name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
_DEVICE_PATTERN = DEVICE_PATTERN


class PairXConfig(BaseModel):
    """PAIR-X settings. Construct directly, embed as a field of a host model, or use :func:`load_config`.

    Constructing it with bad values raises :class:`ConfigError` (a host model that embeds it gets
    pydantic's own ``ValidationError`` instead, as usual for nested models).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Explain matches at all; false returns records untouched.")
    layer_keys: list[str] | Literal["auto"] = Field(
        "auto",
        description='Dotted module names of the layers to explain (e.g. ["blocks.3"]), or "auto" for '
        "the engine's suggested default layer. A single string is taken as a one-element list.",
    )
    top_k: int = Field(5, ge=1, description="Explain candidates with rank < top_k for each query.")
    k_lines: int = Field(20, ge=1, description="Matches drawn as lines (and listed in the artifact).")
    k_colors: int = Field(10, ge=1, description="Top matches that get a pixel-level colour map.")
    mode: Literal["conservative", "parity"] = Field(
        "conservative", description="conservative: LRP rules of the project; parity: as the PAIR-X reference."
    )
    backend: Literal["auto", "zennit-lrp", "gradient-x-input", "gradient-x-input-gamma"] = Field(
        "auto", description="Relevance backend; auto chooses by inspecting the model."
    )
    device: str = Field(
        "auto",
        description="auto (the model's device), cpu, cuda or cuda:N. The model is never moved; an "
        "explicit device must be the one the model is on.",
    )
    max_batch_images: int = Field(8, ge=1, description="Most candidate images of one query passed to one engine call.")
    render: list[PanelKind] = Field(
        default_factory=list,
        description="Panel kinds to render eagerly into each artifact as PNGs (duplicates are dropped, order is "
        "canonical). Default none: the artifact stores the data every panel is drawn from (pair_data.npz and "
        "the shared display images) and `pairx-plugin render` or the review page draws panels on demand.",
    )
    display_max_side: int = Field(
        1024,
        ge=16,
        le=16384,
        description="Longest side (pixels) of the stored display image; larger display crops are scaled down.",
    )
    output_dir: str | None = Field(None, description="Artifact store root used when the host passes no store.")
    keep_arrays: bool = Field(False, description="Also save the raw relevance arrays as arrays.npz.")
    rerank: RerankConfig = Field(default_factory=RerankConfig, description="Opt-in re-ranking (docs/metrics.md).")
    lines: Literal["auto", "relevance"] = Field(
        "auto",
        description="Which matches are drawn as lines for the curator: auto draws the most relevant matches "
        "on the animal when the host gave a foreground (mask or box) for both images, else the published "
        "most relevant matches; relevance always draws the published most relevant matches (docs/metrics.md).",
    )

    def __init__(self, **data: Any) -> None:
        # pydantic calls an overridden __init__ during validation too, so a host model embedding this
        # one sees the same message inside its own ValidationError.
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, section="pairx")) from None

    @field_validator("layer_keys", mode="before")
    @classmethod
    def _normalise_layer_keys(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ValueError('must be "auto" or a list of layer keys such as ["blocks.3"]')
        if not value:
            raise ValueError('must not be empty; use "auto" for the default layer')
        for key in value:
            if not isinstance(key, str) or not key.strip():
                raise ValueError(f"every layer key must be a non-empty string, got {echo(key)}")
        if len(set(value)) != len(value):
            duplicates = sorted({k for k in value if list(value).count(k) > 1})
            raise ValueError(f"duplicate layer keys {duplicates}; list each layer once")
        return list(value)

    @field_validator("top_k", "k_lines", "k_colors", "max_batch_images", "display_max_side", mode="before")
    @classmethod
    def _reject_bool_counts(cls, value: Any) -> Any:
        if isinstance(value, bool):  # YAML "yes" would otherwise count as 1
            raise ValueError("must be an integer, not a boolean")
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = value.strip()
        if not _DEVICE_PATTERN.match(value):
            raise ValueError("must be auto, cpu, cuda or cuda:N (N a GPU index)")
        return value

    @field_validator("render")
    @classmethod
    def _canonical_render(cls, value: list[str]) -> list[str]:
        present = set(value)
        return [kind for kind in ALL_PANELS if kind in present]

    def digest(self) -> str:
        """sha256 (hex) of the canonical JSON of the fields that change an artifact (``DIGEST_FIELDS``)."""
        payload = self.model_dump(mode="json", include=set(DIGEST_FIELDS))
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def engine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``PairX(model, **kwargs)`` built from this configuration."""
        return {
            "layer_keys": None if self.layer_keys == "auto" else list(self.layer_keys),
            "k_lines": self.k_lines,
            "k_colors": self.k_colors,
            "mode": self.mode,
            "backend": self.backend,
            "max_batch_images": self.max_batch_images,
        }


def format_validation_error(exc: ValidationError, section: str = "pairx") -> str:
    """One line per problem, each starting with the dotted key it concerns."""
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"] if not _is_union_branch(part)]
        key = ".".join([section, *loc]) if section else ".".join(loc) or "<root>"
        lines.append(f"{key}: {_describe(err)}")
    return "; ".join(lines)


def _is_union_branch(part: Any) -> bool:
    # pydantic names union members in the location (e.g. "list[str]", "literal['auto']")
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "bool", "float"})


def _describe(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    got = err.get("input")
    if kind == "extra_forbidden":
        return f"unknown key; valid keys are: {', '.join(PairXConfig.model_fields)}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}, got {echo(got)}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {echo(got)}"
    message = str(err["msg"])
    for prefix in ("Value error, ", "Input should be "):
        if message.startswith(prefix):
            message = ("must be " if prefix.startswith("Input") else "") + message[len(prefix) :]
    return f"{shorten(message)}, got {echo(got)}"


def load_config(source: Any = None, section: str = "pairx") -> PairXConfig:
    """A validated ``PairXConfig`` from a dict, a ``PairXConfig``, a YAML/JSON file path or a YAML/JSON string.

    When the document has a top-level ``section`` key (dotted paths such as ``"host.pairx"`` walk
    nested mappings), that section is used; otherwise the whole document is the section. ``None``
    gives the defaults.
    """
    if source is None:
        return PairXConfig()
    if isinstance(source, PairXConfig):
        return source
    document = _read_document(source)
    data = _select_section(document, section)
    try:
        return PairXConfig(**{str(key): value for key, value in data.items()})
    except ConfigError as exc:
        if section == "pairx":
            raise
        message = re.sub(r"(^|; )pairx\.", lambda m: f"{m.group(1)}{section}.", str(exc))  # host's section name
        raise ConfigError(message) from None


def _read_document(source: Any) -> Any:
    if isinstance(source, Mapping):
        return source
    if isinstance(source, os.PathLike):
        return _parse_text(_read_file(Path(source)), origin=str(source))
    if isinstance(source, str):
        stripped = source.strip()
        looks_like_path = "\n" not in stripped and stripped.lower().endswith((".yaml", ".yml", ".json"))
        if looks_like_path:
            return _parse_text(_read_file(Path(stripped)), origin=stripped)
        return _parse_text(source, origin="<string>")
    raise ConfigError(
        f"cannot load a PAIR-X configuration from {type(source).__name__}; pass a dict, a PairXConfig, "
        "a path to a .yaml/.json file or a YAML/JSON string"
    )


def _read_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {str(path)!r} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {str(path)!r}: {exc}") from None


def _parse_text(text: str, origin: str) -> Any:
    document = load_yaml(text, origin=origin)
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise ConfigError(
            f"configuration {origin!r} must be a mapping of keys to values, got {type(document).__name__}"
        )
    return document


#: a YAML document may expand (through aliases) to at most this many nodes ...
MAX_YAML_NODES = 100_000
#: ... and, above 10 000 nodes, to at most this many times the nodes it spells out
MAX_YAML_EXPANSION = 20


def load_yaml(text: str, *, origin: str = "<string>") -> Any:
    """The one YAML/JSON reader of the project: safe types only, alias expansion bounded.

    An alias bomb (``a: &a [x, x]``, ``b: &b [*a, *a]``, ...) is a few hundred bytes that expands to
    billions of values; the document is composed first (aliases still shared), its expanded size
    counted, and it is refused with a :class:`ConfigError` when that size exceeds
    :data:`MAX_YAML_NODES` or, above 10 000 nodes, :data:`MAX_YAML_EXPANSION` times the nodes written
    out. Recursive aliases are refused too. Hosts' own config readers call this as well.
    """
    import yaml  # JSON documents are YAML too, so one parser reads both

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded, written = _yaml_size(node)
        if expanded > MAX_YAML_NODES or (expanded > 10_000 and expanded > MAX_YAML_EXPANSION * written):
            raise ConfigError(
                f"configuration {origin!r}: its aliases expand {written} written values to {expanded}; "
                "refused as a possible alias bomb — write the values out or use fewer nested aliases"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration {origin!r} is not valid YAML/JSON: {shorten(str(exc), 400)}") from None
    finally:
        loader.dispose()


def _yaml_size(root: Any) -> tuple[int, int]:
    """(expanded node count, distinct node count) of a composed YAML node graph, without expanding it."""
    import yaml

    sizes: dict[int, int] = {}
    in_progress: set[int] = set()
    # iterative post-order walk; an alias is the same node object reached twice
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes and not children_done:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = 1
            continue
        children = [v for pair in node.value for v in pair] if isinstance(node, yaml.MappingNode) else list(node.value)
        if children_done:
            in_progress.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            continue
        if key in in_progress:
            raise ConfigError("configuration: a YAML alias refers to itself (a recursive structure); write it out")
        in_progress.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in in_progress:
                raise ConfigError("configuration: a YAML alias refers to itself (a recursive structure); write it out")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)], len(sizes)


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel = 3
_SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = _SHORT_REPR.maxset = _SHORT_REPR.maxdict = 6
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 120
MAX_ECHO = 200


def shorten(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` cut to ``limit`` characters (with a note of how much was left out)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def echo(value: Any) -> str:
    """A bounded repr of a user-supplied value for an error message (at most about 200 characters)."""
    return shorten(_SHORT_REPR.repr(value))


def _select_section(document: Mapping[str, Any], section: str) -> Mapping[str, Any]:
    if not section:
        return document
    node: Any = document
    for part in section.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return document  # no such section: the whole document is the section
        node = node[part]
    if node is None:
        return {}
    if not isinstance(node, Mapping):
        raise ConfigError(f"{section}: must be a mapping of PAIR-X settings, got {type(node).__name__}")
    return node


__all__ = [
    "ALL_PANELS",
    "DEVICE_PATTERN",
    "DIGEST_FIELDS",
    "PairXConfig",
    "PanelKind",
    "echo",
    "format_validation_error",
    "load_config",
    "load_yaml",
    "resolve_device",
    "shorten",
]


def resolve_device(name: str, model: nn.Module | None = None, *, key: str = "pairx.device") -> torch.device:
    """The one place a device name (``auto``, ``cpu``, ``cuda``, ``cuda:N``) becomes a torch device.

    * With ``model`` (a host's model, which PAIR-X never moves): ``auto`` is the model's own device;
      any other name must be the device the model is on.
    * Without ``model`` (a caller that is about to build and place a model itself): ``auto`` is the
      first GPU when there is one, else the CPU.

    ``key`` names the setting in error messages (``pairx.device``, ``--device``, ...).
    """
    import torch

    text = str(name).strip().lower()
    if not DEVICE_PATTERN.match(text):
        raise ConfigError(f"{key}: expected auto, cpu, cuda or cuda:N, got {str(name)[:60]!r}")
    model_device = None
    if model is not None:
        parameter = next(iter(model.parameters()), None)
        model_device = parameter.device if parameter is not None else torch.device("cpu")
        if text == "auto":
            return model_device
    elif text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    wanted = torch.device(text)
    if wanted.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}: {name!r} but CUDA is not available on this machine; use auto or cpu")
        if wanted.index is not None and wanted.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{key}: {name!r} but this machine has {torch.cuda.device_count()} GPU(s) "
                "(cuda:0 ...); pick one of them"
            )
    if model_device is not None:
        same = wanted.type == model_device.type and (wanted.index is None or wanted.index == model_device.index)
        if not same:
            raise ConfigError(
                f"{key}: {name!r} but the model is on {model_device}; PAIR-X never moves the "
                f"model, so move it first (model.to({text!r})) or use auto"
            )
        return model_device
    return wanted
