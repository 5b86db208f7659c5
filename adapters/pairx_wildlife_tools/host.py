"""Every difference between the wildlife-tools releases the adapter supports, in one place.

Two API generations are in use:

- **0.0.9** (PyPI, January 2024): ``CosineSimilarity()(q, d)`` returns ``{"cosine": matrix}`` (some
  early 1.x builds used ``{"default": matrix}``); configs are built by ``wildlife_tools.tools.realize``
  from names registered in ``tools.Store.modules``; ``DeepFeatures`` shows a progress bar from
  ``wildlife_tools/features/deep.py``; ``KnnClassifier`` calls pandas' deprecated ``fillna(method=...)``.
- **1.x** (GitHub, 1.0.3 tested): ``CosineSimilarity`` returns the matrix itself; ``TopkClassifier(...,
  return_all=True)`` and ``SimilarityPipeline``/``WildFusion`` exist; ``Store``/``realize`` are gone;
  ``DeepFeatures`` (``FeatureCacheMixin``) shows its bar from ``wildlife_tools/data/cache.py`` and
  moves the model back to the CPU after extracting.

The rest of the adapter calls what is here and never tests a version itself.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pairx_plugin.errors import InvalidInputError, PairXError

ApiGeneration = Literal["0.0.9", "1.x"]

#: method name in a 0.0.9 wildlife-tools config -> (module, attribute)
CONFIG_COMPONENTS: dict[str, tuple[str, str]] = {
    "PairXKnnClassifier": ("pairx_wildlife_tools.classifier", "PairXKnnClassifier"),
}


def api_generation() -> ApiGeneration:
    """``"0.0.9"`` when the installed wildlife-tools has the ``Store``/``realize`` config API, else ``"1.x"``."""
    tools = importlib.import_module("wildlife_tools.tools")
    return "0.0.9" if isinstance(getattr(getattr(tools, "Store", None), "modules", None), dict) else "1.x"


def version() -> str:
    """The installed wildlife-tools distribution's version (``"unknown"`` when not recorded)."""
    from importlib import metadata

    try:
        return metadata.version("wildlife-tools")
    except metadata.PackageNotFoundError:
        return "unknown"


def register_config_components() -> dict[str, tuple[str, str]]:
    """Add :data:`CONFIG_COMPONENTS` to 0.0.9's ``tools.Store.modules``; returns what was registered.

    Idempotent. On 1.x there is no config store (no ``realize``): nothing is registered and ``{}`` is
    returned; 1.x pipelines are configured by ``pairx-plugin run --config`` or the wrapper classifiers.
    A name already registered to something else raises :class:`PairXError`.
    """
    if api_generation() != "0.0.9":
        return {}
    from wildlife_tools import tools

    table = tools.Store.modules
    for name, target in CONFIG_COMPONENTS.items():
        existing = table.get(name)
        if existing is not None and tuple(existing) != target:
            raise PairXError(
                f"wildlife-tools config store already has {name!r} -> {existing}; another package "
                f"registered that name, so {target} cannot be added under it"
            )
        table[name] = target
    return dict(CONFIG_COMPONENTS)


def unwrap_similarity(similarity: Any, key: str | None = None) -> Any:
    """The matrix inside a 0.0.9 similarity dict (``{"cosine": m}``); a 1.x matrix passes through.

    ``key`` picks one matrix from a dict with several; a single-entry dict gives its only matrix.
    """
    if not isinstance(similarity, Mapping):
        return similarity
    if key is not None:
        if key not in similarity:
            raise InvalidInputError(
                f"similarity has no key {key!r}; it has {sorted(similarity)}; pass one of those as key"
            )
        return similarity[key]
    if len(similarity) == 1:
        return next(iter(similarity.values()))
    if "cosine" in similarity:
        return similarity["cosine"]
    raise InvalidInputError(
        f"similarity dict has several matrices {sorted(similarity)}; pass key= to pick the one to explain"
    )


def cosine_similarity(query_features: Any, database_features: Any) -> Any:
    """``CosineSimilarity()(query, database)`` of the installed release, as the bare matrix."""
    from wildlife_tools.similarity import CosineSimilarity

    return unwrap_similarity(CosineSimilarity()(query_features, database_features))


def _disabled_tqdm(original: Any) -> Any:
    @functools.wraps(original)
    def quiet(*args: Any, **kwargs: Any) -> Any:
        kwargs["disable"] = True
        return original(*args, **kwargs)

    return quiet


@contextlib.contextmanager
def quiet_progress(extractor: Any, enabled: bool = True) -> Iterator[None]:
    """Hide the extractor's tqdm bar while the block runs (``enabled=False`` leaves it alone).

    wildlife-tools calls ``tqdm(loader, ...)`` without a ``disable`` switch, from the module that
    defines the extraction loop (0.0.9: ``features/deep.py``; 1.x: ``data/cache.py``). The ``tqdm``
    name in every module along the extractor's class hierarchy is swapped for a disabled one for the
    duration of the block and put back afterwards.
    """
    if not enabled:
        yield
        return
    from tqdm import tqdm as tqdm_class

    swapped: list[tuple[Any, Any]] = []
    for cls in type(extractor).__mro__:
        module = sys.modules.get(cls.__module__)
        original = getattr(module, "tqdm", None)
        if module is not None and original is tqdm_class and all(m is not module for m, _ in swapped):
            swapped.append((module, original))
            module.tqdm = _disabled_tqdm(original)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module, original in swapped:
            module.tqdm = original


def topk_classifier_class() -> Any:
    """1.x ``wildlife_tools.inference.TopkClassifier``; 0.0.9 has none, which raises :class:`InvalidInputError`."""
    inference = importlib.import_module("wildlife_tools.inference")
    found = getattr(inference, "TopkClassifier", None)
    if found is None:
        raise InvalidInputError(
            f"the installed wildlife-tools {version()} has no TopkClassifier (it came with 1.x); use "
            "PairXKnnClassifier, or install wildlife-tools 1.x from git"
        )
    return found


@contextlib.contextmanager
def known_deprecations_silenced() -> Iterator[None]:
    """Silence the deprecation warnings wildlife-tools itself triggers (not the user's to fix).

    0.0.9's ``KnnClassifier`` calls pandas' deprecated ``DataFrame.fillna(method=...)``.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="DataFrame.fillna with 'method'", category=FutureWarning)
        yield
