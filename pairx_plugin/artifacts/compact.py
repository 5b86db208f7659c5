"""Compact artifacts (schema 1.2): the data every panel is drawn from, and drawing panels from it on demand.

A 1.2 artifact stores, per record, ``explanation.json`` plus ``pair_data.npz``; the display photos are
stored once per content under ``images/`` (see :meth:`ArtifactStore.put_shared`). ``pair_data.npz``
holds (a zip written with fixed timestamps, so equal data gives equal bytes):

``relevance_query`` / ``relevance_candidate``
    float16 (h, w) layer relevance on the feature grid (the heat maps).
``pixel_maps_query`` / ``pixel_maps_candidate``
    uint8 (k, H', W'): the top ``k_colors`` pixel relevance maps, each clipped at 0 and divided by its
    own maximum (what the colour panels draw), quantised to 0..255, at the input size scaled so the
    longest side is at most :data:`PIXEL_MAP_MAX_SIDE` (bilinear).
``pixel_maps_query_max`` / ``pixel_maps_candidate_max``
    float32 (k,): each map's maximum, so the maps can be scaled back to relevance units.

The matches (cells, coordinates, relevance) are in ``explanation.json``. :func:`render_stored` rebuilds a
:class:`~pairx_plugin.engine.results.LayerExplanation` from these and calls the same ``render_pair`` the
eager path uses; :func:`materialize` writes the PNGs into a render cache under
``rendered/<id[:2]>/<id>/<role>.png`` (derived files, safe to delete).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..errors import ArtifactError, InvalidInputError

if TYPE_CHECKING:
    from ..engine.results import LayerExplanation, Match
    from .render import RenderedImage
    from .schema import ExplanationArtifact
    from .store import ArtifactStore

PAIR_DATA_NAME = "pair_data.npz"
PAIR_DATA_ROLE = "pair_data"
#: longest side of the stored pixel maps (input sizes above it are scaled down; 224 px inputs stay 224)
PIXEL_MAP_MAX_SIDE = 224
RENDER_DIR = "rendered"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
SIDES = ("query", "candidate")


# --------------------------------------------------------------------------- display cap


def cap_display(display: np.ndarray, max_side: int) -> np.ndarray:
    """The display image scaled down (PIL bilinear, antialiased) so its longest side is at most ``max_side``."""
    height, width = int(display.shape[0]), int(display.shape[1])
    longest = max(height, width)
    if longest <= max_side:
        return display
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(display)).resize(size, Image.Resampling.BILINEAR))


# --------------------------------------------------------------------------- deterministic npz


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """A compressed ``.npz`` whose bytes depend on the arrays only (fixed zip timestamps, sorted names)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue(), compresslevel=9)
    return buffer.getvalue()


def _scaled_size(size_hw: tuple[int, int]) -> tuple[int, int]:
    height, width = size_hw
    longest = max(height, width)
    if longest <= PIXEL_MAP_MAX_SIDE:
        return height, width
    scale = PIXEL_MAP_MAX_SIDE / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


def _resize_float(values: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    values = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if values.shape == size_hw:
        return values
    image = Image.fromarray(values, mode="F").resize((size_hw[1], size_hw[0]), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def _quantise(maps: np.ndarray, size_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    maps = np.asarray(maps, dtype=np.float32)
    target = _scaled_size(size_hw)
    out = np.zeros((maps.shape[0], *target), dtype=np.uint8)
    peaks = np.zeros((maps.shape[0],), dtype=np.float32)
    for index, pixel_map in enumerate(maps):
        values = np.clip(_resize_float(pixel_map, target), 0.0, None)
        peak = float(values.max()) if values.size else 0.0
        peaks[index] = peak
        if peak > 0.0:
            out[index] = np.clip(np.rint(values / peak * 255.0), 0, 255).astype(np.uint8)
    return out, peaks


def pair_data_bytes(layer: LayerExplanation, query_size: tuple[int, int], candidate_size: tuple[int, int]) -> bytes:
    """``pair_data.npz`` of one pair at one layer (see the module docstring)."""
    arrays: dict[str, np.ndarray] = {}
    for side, size in (("query", query_size), ("candidate", candidate_size)):
        relevance = np.nan_to_num(np.asarray(getattr(layer, f"relevance_{side}"), dtype=np.float32))
        arrays[f"relevance_{side}"] = relevance.astype(np.float16)
        maps = np.asarray(getattr(layer, f"pixel_relevance_{side}"), dtype=np.float32)
        if maps.ndim != 3:
            maps = np.zeros((0, int(size[0]), int(size[1])), dtype=np.float32)
        quantised, peaks = _quantise(maps, (int(size[0]), int(size[1])))
        arrays[f"pixel_maps_{side}"] = quantised
        arrays[f"pixel_maps_{side}_max"] = peaks
    return npz_bytes(arrays)


def read_pair_data(data: bytes, *, source: str = PAIR_DATA_NAME) -> dict[str, np.ndarray]:
    """The arrays of a ``pair_data.npz``; :class:`ArtifactError` naming ``source`` when it is not one."""
    required = [f"{kind}_{side}" for side in SIDES for kind in ("relevance", "pixel_maps")]
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as exc:
        raise ArtifactError(f"{source} is not a readable pair-data .npz ({exc}); re-run to rewrite it") from exc
    missing = [name for name in required if name not in arrays]
    if missing:
        raise ArtifactError(f"{source} lacks arrays {missing}; re-run to rewrite it")
    return arrays


# --------------------------------------------------------------------------- drawing from stored data


def stored_layer(document: ExplanationArtifact, arrays: Mapping[str, np.ndarray]) -> LayerExplanation:
    """A ``LayerExplanation`` rebuilt from a 1.2 document and its pair data (pixel maps at input size)."""
    from ..engine.results import LayerExplanation, PairMetrics

    maps = {}
    for side in SIDES:
        info = getattr(document, side)
        size = (info.input_height, info.input_width)
        quantised = np.asarray(arrays[f"pixel_maps_{side}"], dtype=np.float32) / 255.0
        maps[side] = (
            np.stack([_resize_float(m, size) for m in quantised])
            if len(quantised)
            else np.zeros((0, *size), dtype=np.float32)
        )
    matches = _engine_matches(document.matches)
    metrics = document.metrics
    return LayerExplanation(
        key=document.layer,
        relevance_query=np.asarray(arrays["relevance_query"], dtype=np.float32),
        relevance_candidate=np.asarray(arrays["relevance_candidate"], dtype=np.float32),
        matches=matches,
        pixel_relevance_query=maps["query"],
        pixel_relevance_candidate=maps["candidate"],
        metrics=PairMetrics(
            irm=metrics.irm,
            mc=metrics.mc or 0.0,
            inlier_ratio=metrics.inlier_ratio,
            match_count=metrics.match_count or 0,
        ),
    )


def curator_matches(document: ExplanationArtifact) -> list[Match]:
    """The document's curator lines as engine matches (for drawing); the published matches for older documents."""
    return _engine_matches(document.drawn_matches())


def _engine_matches(matches: Sequence[Any]) -> list[Match]:
    """Artifact matches as the engine's ``Match`` records (what the renderer draws)."""
    from ..engine.results import Match

    return [
        Match(
            query_cell=m.query_cell,
            candidate_cell=m.candidate_cell,
            query_xy=m.query_xy,
            candidate_xy=m.candidate_xy,
            relevance=m.relevance,
            distance=m.distance,
        )
        for m in matches
    ]


def _check_compact(document: ExplanationArtifact, where: str) -> None:
    if (
        document.file(PAIR_DATA_ROLE) is None
        or document.query.display_file is None
        or document.candidate.display_file is None
    ):
        raise ArtifactError(
            f"artifact {document.artifact_id} ({where}) has no stored pair data (schema "
            f"{document.schema_version}); it was written with its panels rendered, use those PNGs"
        )


def render_stored(store: ArtifactStore, artifact_id: str, panels: Iterable[str]) -> dict[str, RenderedImage]:
    """Render ``panels`` of a compact artifact from its stored data; ``{role: RenderedImage}``."""
    from .render import render_pair

    document = store.load(artifact_id)
    _check_compact(document, str(store.artifact_dir(artifact_id)))
    directory = store.artifact_dir(artifact_id)
    try:
        raw = (directory / PAIR_DATA_NAME).read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {str(directory / PAIR_DATA_NAME)!r}: {exc.strerror or exc}") from exc
    arrays = read_pair_data(raw, source=str(directory / PAIR_DATA_NAME))
    layer = stored_layer(document, arrays)
    displays = {side: store.read_shared_image(getattr(document, side).display_file) for side in SIDES}
    return render_pair(
        displays["query"],
        displays["candidate"],
        layer,
        (document.query.input_height, document.query.input_width),
        (document.candidate.input_height, document.candidate.input_width),
        k_lines=document.settings.k_lines,
        panels=set(panels),
        lines=None if document.curator_lines is None else curator_matches(document),
    )


def rendered_dir(store: ArtifactStore, artifact_id: str) -> Path:
    store.artifact_dir(artifact_id)  # validates the id
    return store.root / RENDER_DIR / artifact_id[:2] / artifact_id


def materialize(
    store: ArtifactStore, artifact_id: str, panels: Iterable[str], *, force: bool = False
) -> dict[str, str]:
    """PNG panels of an artifact as ``{role: path relative to the store root}``.

    Panels rendered eagerly (in the artifact's ``files``) and the shared display images are used as
    they are; any other requested panel of a compact artifact is drawn from its stored data into the
    render cache once (an existing cached PNG is reused unless ``force``).
    """
    from ..config import ALL_PANELS
    from .store import atomic_write

    wanted = set(panels)
    unknown = wanted - set(ALL_PANELS)
    if unknown:
        raise InvalidInputError(f"unknown panels {sorted(unknown)}; choose from {list(ALL_PANELS)}")
    document = store.load(artifact_id)
    refs = dict(store.ref(document).images)
    if document.file(PAIR_DATA_ROLE) is None:
        return refs  # a 1.0 (or eagerly rendered) artifact: what it has is what there is
    roles = _roles_of(wanted)
    cache = rendered_dir(store, artifact_id)
    missing = [role for role in roles if role not in refs and (force or not (cache / f"{role}.png").is_file())]
    if missing:
        kinds = {kind for kind in wanted if any(role in missing for role in _roles_of({kind}))}
        for role, image in render_stored(store, artifact_id, kinds).items():
            if role in missing:
                atomic_write(cache / image.name, image.png)
    for role in roles:
        if role not in refs and (cache / f"{role}.png").is_file():
            refs[role] = store.relative(cache / f"{role}.png")
    return refs


_PANEL_ROLES: dict[str, tuple[str, ...]] = {
    "composite": ("composite",),
    "only_lines": ("only_lines",),
    "only_colors": ("only_colors",),
    "heatmaps": ("heatmap_query", "heatmap_candidate"),
    "overlays": (
        "overlay_heatmap_query",
        "overlay_heatmap_candidate",
        "overlay_points_query",
        "overlay_points_candidate",
        "overlay_lines_pair",
        "overlay_colors_query",
        "overlay_colors_candidate",
    ),
    "display": ("display_query", "display_candidate", "display_pair"),
}


def _roles_of(kinds: Iterable[str]) -> list[str]:
    return [role for kind in sorted(kinds) for role in _PANEL_ROLES.get(kind, ())]


__all__ = [
    "PAIR_DATA_NAME",
    "PAIR_DATA_ROLE",
    "PIXEL_MAP_MAX_SIDE",
    "RENDER_DIR",
    "cap_display",
    "materialize",
    "npz_bytes",
    "pair_data_bytes",
    "read_pair_data",
    "render_stored",
    "rendered_dir",
    "stored_layer",
]
