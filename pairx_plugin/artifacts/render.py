"""Draw one pair's PAIR-X explanation as PNG panels and transparent overlay layers.

Pillow and numpy only, and deterministic: the same inputs give byte-identical PNG bytes (no
timestamps or metadata chunks, fixed compression, no randomness, integer pixel coordinates).

Panels (the ``panels`` argument of :func:`render_pair`):

``composite``    the paper's layout, two rows. Top: each image resized to its model input size with
                 its layer relevance as a jet heat map (alpha 0.4), side by side, the top ``k_lines``
                 matches drawn as lines with small circles at both ends. Bottom: one sequential
                 colour map per pixel-relevance map, accumulated subtractively over white with the
                 images faded in at opacity 0.2.
``only_lines``   the top row alone.
``only_colors``  the bottom row alone.
``heatmaps``     each image (input size) with its layer relevance heat map.
``overlays``     RGBA layers at each *display* image's own size, transparent where nothing is
                 drawn, so a UI can show/hide them over the clean photo: the heat map, numbered
                 match points, the colour maps, and the match lines over the clean side-by-side pair.
``display``      the clean display images and the clean side-by-side pair.

Side-by-side canvases put the query at x = 0 and the candidate at x = query width, both top
aligned; a shorter image leaves white (or, in overlays, transparent) space below it.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..config import ALL_PANELS
from ..engine.results import LayerExplanation, Match
from ..errors import InvalidInputError
from . import colormaps

PANELS = frozenset(ALL_PANELS)  # the one panel list lives in config.ALL_PANELS
HEATMAP_ALPHA = 0.4  # opacity of the jet heat map over the image in the top row
HEATMAP_OVERLAY_MAX_ALPHA = 0.6  # opacity of the most relevant pixel in the heat map overlay
COLOUR_STRENGTH = 0.8  # each colour map darkens the white canvas by this share of its colour
FADED_IMAGE_OPACITY = 0.2  # the raw image under the colour maps
POWER_GAMMA = 0.95
PNG_COMPRESS_LEVEL = 3  # zlib level: 2-3x faster than 6 on photos for about 10 % more bytes
SIDES = ("query", "candidate")


@dataclass(frozen=True)
class RenderedImage:
    """One rendered PNG: ``name`` is the file name, ``role`` says what it shows."""

    name: str
    role: str
    png: bytes
    width: int
    height: int


# --------------------------------------------------------------------------- encoding helpers


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes with fixed options and no metadata, so equal pixels give equal bytes."""
    clean = Image.frombytes(image.mode, image.size, image.tobytes())  # drops any .info
    buffer = io.BytesIO()
    clean.save(buffer, format="PNG", optimize=False, compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def to_bgr_array(png_bytes: bytes) -> np.ndarray:
    """Decode PNG bytes to an HxWx3 uint8 array in BGR order (what OpenCV and WBIA expect).

    Transparent images are composited over white first.
    """
    try:
        image = Image.open(io.BytesIO(png_bytes))
        image.load()
    except Exception as exc:
        raise InvalidInputError(
            f"to_bgr_array: the bytes are not a readable PNG ({exc}); pass RenderedImage.png"
        ) from exc
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat: Image.Image = Image.alpha_composite(white, rgba)
    else:
        flat = image
    rgb = np.asarray(flat.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _rendered(role: str, image: Image.Image) -> RenderedImage:
    return RenderedImage(name=f"{role}.png", role=role, png=encode_png(image), width=image.width, height=image.height)


# --------------------------------------------------------------------------- array helpers


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _resize_rgb(rgb: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """uint8 RGB resized with PIL bilinear (antialiased when shrinking), float32 in [0, 1] out."""
    height, width = size_hw
    if rgb.shape[:2] != (height, width):
        rgb = np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR))
    return rgb.astype(np.float32) / 255.0


def _resize_map(values: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """A float map resized with PIL bilinear in 32-bit float mode."""
    height, width = size_hw
    values = np.nan_to_num(np.asarray(values, dtype=np.float32))
    if values.shape == (height, width):
        return values
    return np.asarray(
        Image.fromarray(values, mode="F").resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32
    )


def _side_by_side(left: np.ndarray, right: np.ndarray, fill: float) -> np.ndarray:
    """Two (h, w, c) float arrays top-aligned next to each other; empty space is ``fill``."""
    height = max(left.shape[0], right.shape[0])
    canvas = np.full((height, left.shape[1] + right.shape[1], left.shape[2]), fill, dtype=np.float32)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] :] = right
    return canvas


def _stack_rows(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    width = max(top.shape[1], bottom.shape[1])
    canvas = np.ones((top.shape[0] + bottom.shape[0], width, 3), dtype=np.float32)
    canvas[: top.shape[0], : top.shape[1]] = top
    canvas[top.shape[0] :, : bottom.shape[1]] = bottom
    return canvas


# --------------------------------------------------------------------------- drawing pieces


def heat_rgb(relevance: np.ndarray, size_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Jet colours of a layer relevance map upsampled to ``size_hw``, and its [0, 1] values."""
    values = colormaps.min_max(_resize_map(relevance, size_hw))
    return colormaps.jet(values), values


def heat_over_image(image: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    """The image (float RGB) with the relevance heat map blended in at :data:`HEATMAP_ALPHA`."""
    heat, _ = heat_rgb(relevance, image.shape[:2])
    return (1.0 - HEATMAP_ALPHA) * image + HEATMAP_ALPHA * heat


def colour_darkening(pixel_maps: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """How much each pixel is darkened (per channel, in [0, 1]) by the accumulated colour maps.

    Map ``i`` is power-normalised (vmin 0, its own vmax, gamma 0.95), coloured with the ``i``-th
    sequential map, and subtracts ``COLOUR_STRENGTH * (1 - colour)`` from the white canvas.
    """
    darkening = np.zeros((*size_hw, 3), dtype=np.float32)
    for index, pixel_map in enumerate(pixel_maps):
        values = colormaps.power_norm(_resize_map(pixel_map, size_hw), POWER_GAMMA)
        darkening += COLOUR_STRENGTH * (1.0 - colormaps.sequential(index, values))
    return np.clip(darkening, 0.0, 1.0)


def colours_over_faded_image(image: np.ndarray, pixel_maps: np.ndarray) -> np.ndarray:
    """Bottom-row panel of one image: faded image on white, darkened by the colour maps."""
    base = (1.0 - FADED_IMAGE_OPACITY) + FADED_IMAGE_OPACITY * image
    return np.asarray(np.clip(base - colour_darkening(pixel_maps, image.shape[:2]), 0.0, 1.0))


def _smaller(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return (min(a[0], b[0]), min(a[1], b[1]))


def _marker_radius(size_hw: tuple[int, int]) -> int:
    return max(3, int(round(min(size_hw) / 75)))


def _line_width(size_hw: tuple[int, int]) -> int:
    return max(1, int(round(min(size_hw) / 224)))


def _scaled(xy: tuple[float, float], scale: tuple[float, float], offset_x: int = 0) -> tuple[int, int]:
    """Input-pixel coordinates to integer canvas pixels (scale = (sx, sy), then x offset)."""
    return (int(round(xy[0] * scale[0] - 0.5)) + offset_x, int(round(xy[1] * scale[1] - 0.5)))


def _circle(
    draw: ImageDraw.ImageDraw, centre: tuple[int, int], radius: int, colour: tuple[int, ...], width: int
) -> None:
    x, y = centre
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=colour, width=width)


def draw_match_lines(
    canvas: Image.Image,
    matches: Sequence[Match],
    query_scale: tuple[float, float],
    candidate_scale: tuple[float, float],
    candidate_offset_x: int,
    size_hw: tuple[int, int],
    opaque: bool = False,
) -> None:
    """Draw each match as a line from its query point to its candidate point, circles at both ends."""
    draw = ImageDraw.Draw(canvas)
    width, radius = _line_width(size_hw), _marker_radius(size_hw)
    for index, match in enumerate(matches):
        colour = colormaps.line_colour(index) + ((255,) if opaque else ())
        start = _scaled(match.query_xy, query_scale)
        end = _scaled(match.candidate_xy, candidate_scale, candidate_offset_x)
        draw.line((start, end), fill=colour, width=width)
        _circle(draw, start, radius, colour, width)
        _circle(draw, end, radius, colour, width)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def draw_numbered_points(canvas: Image.Image, points: Iterable[tuple[int, int]], size_hw: tuple[int, int]) -> None:
    """Filled coloured points with their 1-based match number beside them (RGBA canvas)."""
    draw = ImageDraw.Draw(canvas)
    radius = _marker_radius(size_hw)
    font = _font(max(10, radius * 3))
    for index, (x, y) in enumerate(points):
        colour = colormaps.line_colour(index) + (255,)
        draw.ellipse(
            (x - radius, y - radius, x + radius, y + radius), fill=colour, outline=(255, 255, 255, 255), width=1
        )
        draw.text(
            (x + radius + 1, y - radius),
            str(index + 1),
            fill=colour,
            font=font,
            stroke_width=1,
            stroke_fill=(255, 255, 255, 255),
        )


def heatmap_overlay(relevance: np.ndarray, size_hw: tuple[int, int]) -> Image.Image:
    """RGBA jet heat map whose alpha grows with relevance (0 where relevance is the map minimum)."""
    heat, values = heat_rgb(relevance, size_hw)
    alpha = values * HEATMAP_OVERLAY_MAX_ALPHA
    return Image.fromarray(np.dstack([_to_uint8(heat), _to_uint8(alpha)]), mode="RGBA")


def colours_overlay(pixel_maps: np.ndarray, size_hw: tuple[int, int]) -> Image.Image:
    """RGBA colour maps alone: composited over white they give the subtractive colour canvas.

    alpha = the largest per-channel darkening; colour chosen so ``alpha*rgb + (1-alpha)*white``
    equals ``white - darkening``. Pixels without relevance have alpha 0.
    """
    darkening = colour_darkening(pixel_maps, size_hw)
    alpha = darkening.max(axis=-1)
    safe = np.where(alpha > 0, alpha, 1.0)[..., None]
    rgb = np.clip(1.0 - darkening / safe, 0.0, 1.0)
    rgba = np.dstack([_to_uint8(rgb), _to_uint8(alpha)])
    rgba[rgba[..., 3] == 0] = 0  # fully transparent pixels carry no colour either
    return Image.fromarray(rgba, mode="RGBA")


# --------------------------------------------------------------------------- validation


def _check_display(name: str, image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise InvalidInputError(
            f"render_pair: {name} must be an HxWx3 uint8 RGB array, got dtype {array.dtype} shape "
            f"{array.shape}; pass LoadedImage.display"
        )
    return np.ascontiguousarray(array)


def _check_size(name: str, size: Any) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InvalidInputError(f"render_pair: {name} must be (H, W), got {size!r}") from None
    if height < 1 or width < 1:
        raise InvalidInputError(f"render_pair: {name} must be positive (H, W), got {size!r}")
    return height, width


def _check_layer(layer: LayerExplanation, sizes: dict[str, tuple[int, int]]) -> None:
    for side in SIDES:
        relevance = np.asarray(getattr(layer, f"relevance_{side}"))
        if relevance.ndim != 2 or relevance.size == 0:
            raise InvalidInputError(
                f"render_pair: layer {layer.key!r} relevance_{side} must be a non-empty (h, w) map, "
                f"got shape {relevance.shape}"
            )
        pixels = np.asarray(getattr(layer, f"pixel_relevance_{side}"))
        if pixels.ndim != 3 or tuple(pixels.shape[1:]) != sizes[side]:
            raise InvalidInputError(
                f"render_pair: layer {layer.key!r} pixel_relevance_{side} must be (n, H, W) with "
                f"(H, W) = {side}_size {sizes[side]}, got shape {pixels.shape}"
            )
    if len(layer.pixel_relevance_query) != len(layer.pixel_relevance_candidate):
        raise InvalidInputError(
            f"render_pair: layer {layer.key!r} has {len(layer.pixel_relevance_query)} query and "
            f"{len(layer.pixel_relevance_candidate)} candidate pixel maps; they must pair up"
        )


# --------------------------------------------------------------------------- the public entry


def render_pair(
    display_query: np.ndarray,
    display_candidate: np.ndarray,
    layer: LayerExplanation,
    query_size: tuple[int, int],
    candidate_size: tuple[int, int],
    *,
    k_lines: int,
    panels: Iterable[str] | str = PANELS,
    lines: Sequence[Match] | None = None,
) -> dict[str, RenderedImage]:
    """Render the requested panels of one pair at one layer; returns ``{role: RenderedImage}``.

    ``display_*`` are the clean HxWx3 uint8 RGB crops (any size); ``*_size`` the model input
    sizes ``(H, W)`` that the layer's coordinates and pixel maps refer to. Only the first
    ``k_lines`` matches are drawn. ``panels`` is any collection of panel kinds (or one name).
    ``lines``: the matches to draw instead of the layer's top ones (the curator lines,
    :func:`pairx_plugin.evidence.lines.choose_curator_lines`), also at most ``k_lines``.
    """
    panels = frozenset([panels] if isinstance(panels, str) else panels)
    unknown = panels - PANELS
    if unknown:
        raise InvalidInputError(f"render_pair: unknown panels {sorted(unknown)}; choose from {sorted(PANELS)}")
    if isinstance(k_lines, bool) or not isinstance(k_lines, (int, np.integer)) or k_lines < 0:
        raise InvalidInputError(f"render_pair: k_lines must be an integer >= 0, got {k_lines!r}")
    displays = {
        "query": _check_display("display_query", display_query),
        "candidate": _check_display("display_candidate", display_candidate),
    }
    sizes = {"query": _check_size("query_size", query_size), "candidate": _check_size("candidate_size", candidate_size)}
    _check_layer(layer, sizes)
    matches = list((layer.matches if lines is None else lines)[: int(k_lines)])
    relevance = {"query": layer.relevance_query, "candidate": layer.relevance_candidate}
    pixel_maps = {"query": layer.pixel_relevance_query, "candidate": layer.pixel_relevance_candidate}

    out: dict[str, RenderedImage] = {}

    def add(role: str, image: Image.Image) -> None:
        out[role] = _rendered(role, image)

    if panels & {"composite", "only_lines", "only_colors", "heatmaps"}:
        inputs = {side: _resize_rgb(displays[side], sizes[side]) for side in SIDES}
        heated = {side: heat_over_image(inputs[side], relevance[side]) for side in SIDES}
        if "heatmaps" in panels:
            for side in SIDES:
                add(f"heatmap_{side}", Image.fromarray(_to_uint8(heated[side])))
        if panels & {"composite", "only_lines", "only_colors"}:
            top = Image.fromarray(_to_uint8(_side_by_side(heated["query"], heated["candidate"], 1.0)))
            draw_match_lines(
                top, matches, (1.0, 1.0), (1.0, 1.0), sizes["query"][1], _smaller(sizes["query"], sizes["candidate"])
            )
            bottom = _side_by_side(
                colours_over_faded_image(inputs["query"], pixel_maps["query"]),
                colours_over_faded_image(inputs["candidate"], pixel_maps["candidate"]),
                1.0,
            )
            if "only_lines" in panels:
                add("only_lines", top)
            if "only_colors" in panels:
                add("only_colors", Image.fromarray(_to_uint8(bottom)))
            if "composite" in panels:
                composite = _stack_rows(np.asarray(top, dtype=np.float32) / 255.0, bottom)
                add("composite", Image.fromarray(_to_uint8(composite)))

    display_hw = {side: displays[side].shape[:2] for side in SIDES}
    # input pixels -> display pixels, per axis: (sx, sy)
    scales = {side: (display_hw[side][1] / sizes[side][1], display_hw[side][0] / sizes[side][0]) for side in SIDES}

    if "overlays" in panels:
        for side in SIDES:
            add(f"overlay_heatmap_{side}", heatmap_overlay(relevance[side], display_hw[side]))
        for side in SIDES:
            layer_image = Image.new("RGBA", (display_hw[side][1], display_hw[side][0]), (0, 0, 0, 0))
            points = [_scaled(getattr(m, f"{side}_xy"), scales[side]) for m in matches]
            draw_numbered_points(layer_image, points, display_hw[side])
            add(f"overlay_points_{side}", layer_image)
        pair_hw = (
            max(display_hw["query"][0], display_hw["candidate"][0]),
            display_hw["query"][1] + display_hw["candidate"][1],
        )
        line_layer = Image.new("RGBA", (pair_hw[1], pair_hw[0]), (0, 0, 0, 0))
        draw_match_lines(
            line_layer,
            matches,
            scales["query"],
            scales["candidate"],
            display_hw["query"][1],
            _smaller(display_hw["query"], display_hw["candidate"]),
            opaque=True,
        )
        add("overlay_lines_pair", line_layer)
        for side in SIDES:
            add(f"overlay_colors_{side}", colours_overlay(pixel_maps[side], display_hw[side]))

    if "display" in panels:
        for side in SIDES:
            add(f"display_{side}", Image.fromarray(displays[side]))
        pair = _side_by_side(
            displays["query"].astype(np.float32) / 255.0, displays["candidate"].astype(np.float32) / 255.0, 1.0
        )
        add("display_pair", Image.fromarray(_to_uint8(pair)))
    return out
