"""Renderer: determinism, colours, geometry, overlays, the reference layout, bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pairx_plugin.artifacts import colormaps
from pairx_plugin.artifacts.render import PANELS, RenderedImage, render_pair, to_bgr_array
from pairx_plugin.engine.results import LayerExplanation, Match, PairMetrics
from pairx_plugin.errors import InvalidInputError


def decode(rendered: RenderedImage) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(rendered.png)))


def golden_layer(
    golden_dir, pair: str = "p12", size: int = 224
) -> tuple[np.ndarray, np.ndarray, LayerExplanation, np.ndarray]:
    """A LayerExplanation built from the reference implementation's saved arrays."""
    data = np.load(golden_dir / f"effnet_lite0_{size}.npz")
    g = {name.split("__", 1)[1]: data[name] for name in data.files if name.startswith(pair + "__")}
    matches = [
        Match(
            query_cell=tuple(int(v) for v in g["match_coord0"][i]),
            candidate_cell=tuple(int(v) for v in g["match_coord1"][i]),
            query_xy=tuple(float(v) for v in g["match_kp0"][i]),
            candidate_xy=tuple(float(v) for v in g["match_kp1"][i]),
            relevance=float(g["match_relevance"][i]),
            distance=float(g["match_distance"][i]),
        )
        for i in range(len(g["match_relevance"]))
    ]
    layer = LayerExplanation(
        "blocks.3",
        g["ir0"],
        g["ir1"],
        matches,
        g["pix0"],
        g["pix1"],
        PairMetrics(irm=None, mc=0.0, inlier_ratio=None, match_count=len(matches)),
    )
    return g["img_np0"], g["img_np1"], layer, g["explain"]


def synthetic_layer(
    relevance: np.ndarray, matches: list[Match], pixel_maps: np.ndarray, size: int = 224
) -> LayerExplanation:
    return LayerExplanation(
        "blocks.3",
        relevance,
        relevance.copy(),
        matches,
        pixel_maps,
        pixel_maps.copy(),
        PairMetrics(irm=None, mc=0.0, inlier_ratio=None, match_count=len(matches)),
    )


def grey_image(height: int, width: int, value: int = 128) -> np.ndarray:
    return np.full((height, width, 3), value, dtype=np.uint8)


def test_render_is_byte_identical_across_calls(golden_dir, seaturtle_dir):
    _, _, layer, _ = golden_layer(golden_dir)
    display_q = np.asarray(Image.open(seaturtle_dir / "images/identity_a/image_1.JPG").convert("RGB"))
    display_c = np.asarray(Image.open(seaturtle_dir / "images/identity_a/image_2.JPG").convert("RGB"))
    first = render_pair(display_q, display_c, layer, (224, 224), (224, 224), k_lines=20, panels=set(PANELS))
    second = render_pair(
        display_q.copy(), display_c.copy(), layer, (224, 224), (224, 224), k_lines=20, panels=set(PANELS)
    )
    assert set(first) == set(second)
    assert len(first) == 15
    for role, image in first.items():
        assert image.png == second[role].png, role
        assert image.name == f"{role}.png" and image.role == role
        assert image.png.startswith(b"\x89PNG")
        assert b"tIME" not in image.png and b"tEXt" not in image.png


def test_composite_is_two_rows_of_two_images(golden_dir):
    img0, img1, layer, _ = golden_layer(golden_dir)
    out = render_pair(
        img0, img1, layer, (224, 224), (224, 224), k_lines=20, panels={"composite", "only_lines", "only_colors"}
    )
    composite = decode(out["composite"])
    assert composite.shape == (448, 448, 3)
    assert (out["composite"].width, out["composite"].height) == (448, 448)
    assert decode(out["only_lines"]).shape == (224, 448, 3)
    assert decode(out["only_colors"]).shape == (224, 448, 3)
    np.testing.assert_array_equal(composite[:224], decode(out["only_lines"]))
    np.testing.assert_array_equal(composite[224:], decode(out["only_colors"]))


def test_composite_matches_reference_layout(golden_dir):
    """Top row (heat maps + lines) is close to the reference drawing; swapping the images is not."""
    img0, img1, layer, reference = golden_layer(golden_dir, "p13")
    ours = decode(
        render_pair(img0, img1, layer, (224, 224), (224, 224), k_lines=20, panels={"composite"})["composite"]
    ).astype(float)
    swapped = decode(
        render_pair(img1, img0, layer, (224, 224), (224, 224), k_lines=20, panels={"composite"})["composite"]
    ).astype(float)
    top_error = np.abs(ours[:224] - reference[:224]).mean()
    assert top_error < 15.0
    assert np.abs(swapped[:224] - reference[:224]).mean() > top_error + 10.0
    # where no pixel map has relevance, the bottom row is the image faded at 0.2 over white
    empty = layer.pixel_relevance_query.max(axis=0) == 0
    assert empty.sum() > 100
    expected = np.rint(255 * (0.8 + 0.2 * img0.astype(float) / 255))
    assert np.abs(ours[224:, :224][empty] - expected[empty]).max() <= 1


def test_single_hot_cell_is_red_there_and_blue_far_away():
    relevance = np.zeros((14, 14), dtype=np.float32)
    relevance[5, 3] = 1.0  # row y=5, column x=3
    layer = synthetic_layer(relevance, [], np.zeros((0, 224, 224), dtype=np.float32))
    display = grey_image(448, 448)  # display at twice the input size
    out = render_pair(display, display, layer, (224, 224), (224, 224), k_lines=20, panels={"heatmaps", "overlays"})
    heat = decode(out["heatmap_query"]).astype(int)
    cy, cx = 5 * 16 + 8, 3 * 16 + 8
    r, g, b = heat[cy, cx]
    assert r > g + 40 and r > b + 40
    r, g, b = heat[200, 200]
    assert b > r + 40 and b > g + 40
    overlay = decode(out["overlay_heatmap_query"])
    assert overlay.shape == (448, 448, 4)
    assert overlay[2 * cy, 2 * cx, 3] > 100
    assert overlay[2 * cy, 2 * cx, 0] > overlay[2 * cy, 2 * cx, 2]
    assert overlay[400, 400, 3] == 0


def test_lines_are_drawn_at_the_match_pixels():
    relevance = np.ones((14, 14), dtype=np.float32)
    match = Match((3, 6), (9, 6), query_xy=(50.5, 100.5), candidate_xy=(150.5, 100.5), relevance=1.0, distance=0.0)
    layer = synthetic_layer(relevance, [match], np.zeros((1, 224, 224), dtype=np.float32))
    display = grey_image(336, 448)  # H=336, W=448: scale x2 horizontally, x1.5 vertically
    colour = colormaps.line_colour(0)
    out = render_pair(display, display, layer, (224, 224), (224, 224), k_lines=1, panels={"only_lines", "overlays"})
    top = decode(out["only_lines"])
    assert tuple(top[100, 300]) == colour  # on the line between x=50 and x=224+150
    assert tuple(top[110, 300]) != colour
    lines = decode(out["overlay_lines_pair"])
    assert lines.shape == (336, 896, 4)
    y = int(round(100.5 * 1.5 - 0.5))
    assert tuple(lines[y, 448]) == colour + (255,)  # the line crosses the join of the two images
    assert lines[y + 20, 448, 3] == 0
    points = decode(out["overlay_points_query"])
    px = int(round(50.5 * 2 - 0.5))
    assert points.shape == (336, 448, 4)
    assert tuple(points[y, px]) == colour + (255,)
    assert points[10, 10, 3] == 0 and points[300, 400, 3] == 0

    none = render_pair(display, display, layer, (224, 224), (224, 224), k_lines=0, panels={"only_lines"})
    assert tuple(decode(none["only_lines"])[100, 300]) != colour


def test_overlays_are_rgba_at_display_size_and_transparent_elsewhere(golden_dir, seaturtle_dir):
    _, _, layer, _ = golden_layer(golden_dir)
    display_q = np.asarray(Image.open(seaturtle_dir / "images/identity_a/image_1.JPG").convert("RGB"))
    display_c = np.asarray(Image.open(seaturtle_dir / "images/identity_b/image_3.JPG").convert("RGB"))
    out = render_pair(display_q, display_c, layer, (224, 224), (224, 224), k_lines=20, panels={"overlays", "display"})
    sizes = {"query": display_q.shape[:2], "candidate": display_c.shape[:2]}
    for side, (height, width) in sizes.items():
        for kind in ("heatmap", "points", "colors"):
            arr = decode(out[f"overlay_{kind}_{side}"])
            assert arr.shape == (height, width, 4), (kind, side)
            assert (arr[..., 3] == 0).any() and (arr[..., 3] > 0).any(), (kind, side)
        np.testing.assert_array_equal(decode(out[f"display_{side}"]), (display_q if side == "query" else display_c))
    pair_shape = (max(sizes["query"][0], sizes["candidate"][0]), sizes["query"][1] + sizes["candidate"][1])
    assert decode(out["overlay_lines_pair"]).shape == pair_shape + (4,)
    pair = decode(out["display_pair"])
    assert pair.shape == pair_shape + (3,)
    np.testing.assert_array_equal(pair[: sizes["query"][0], : sizes["query"][1]], display_q)
    # colour overlay composited over white reproduces the subtractive colour canvas: no relevance, no colour
    colours = decode(out["overlay_colors_query"])
    no_relevance = (
        np.asarray(
            Image.fromarray(layer.pixel_relevance_query.max(axis=0)).resize(
                (sizes["query"][1], sizes["query"][0]), Image.BILINEAR
            )
        )
        <= 0
    )
    assert no_relevance.any()
    assert (colours[..., 3][no_relevance] == 0).all()


def test_colour_maps_darken_only_where_relevant():
    pixel_maps = np.zeros((2, 224, 224), dtype=np.float32)
    pixel_maps[0, 40:60, 40:60] = 1.0
    pixel_maps[1, 150:170, 150:170] = 2.0
    layer = synthetic_layer(np.ones((14, 14), dtype=np.float32), [], pixel_maps)
    white = grey_image(224, 224, 255)
    bottom = decode(
        render_pair(white, white, layer, (224, 224), (224, 224), k_lines=0, panels={"only_colors"})["only_colors"]
    ).astype(int)
    assert (bottom[0:20, 0:20] == 255).all()
    first, second = bottom[50, 50], bottom[160, 160]
    assert first.max() < 120  # greys: dark and neutral
    assert abs(int(first[0]) - int(first[2])) < 10
    assert second[2] > second[1] and second[0] > second[1]  # purples: red and blue over green
    assert (bottom[50, 274] == bottom[50, 50]).all()  # the candidate half uses the same maps


def test_to_bgr_array_reverses_channels(golden_dir):
    img0, img1, layer, _ = golden_layer(golden_dir)
    out = render_pair(img0, img1, layer, (224, 224), (224, 224), k_lines=20, panels={"composite", "overlays"})
    bgr = to_bgr_array(out["composite"].png)
    assert bgr.shape == (448, 448, 3) and bgr.dtype == np.uint8
    np.testing.assert_array_equal(bgr, decode(out["composite"])[:, :, ::-1])
    flat = to_bgr_array(out["overlay_points_query"].png)  # RGBA: transparent becomes white
    assert flat.shape == (224, 224, 3)
    assert (flat[0, 0] == 255).all()
    with pytest.raises(InvalidInputError, match="not a readable PNG"):
        to_bgr_array(b"not a png")


def test_bad_render_inputs_raise_clear_errors(golden_dir):
    img0, img1, layer, _ = golden_layer(golden_dir)
    as_list = render_pair(img0, img1, layer, (224, 224), (224, 224), k_lines=20, panels=["heatmaps"])
    assert set(as_list) == {"heatmap_query", "heatmap_candidate"}
    assert set(render_pair(img0, img1, layer, (224, 224), (224, 224), k_lines=20, panels="only_lines")) == {
        "only_lines"
    }
    with pytest.raises(InvalidInputError, match="unknown panels.*'sparkles'"):
        render_pair(img0, img1, layer, (224, 224), (224, 224), k_lines=20, panels={"composite", "sparkles"})
    with pytest.raises(InvalidInputError, match="k_lines"):
        render_pair(img0, img1, layer, (224, 224), (224, 224), k_lines=-1, panels={"composite"})
    with pytest.raises(InvalidInputError, match="display_query must be an HxWx3 uint8"):
        render_pair(img0.astype(np.float32), img1, layer, (224, 224), (224, 224), k_lines=20, panels={"composite"})
    with pytest.raises(InvalidInputError, match="pixel_relevance_query must be .* query_size"):
        render_pair(img0, img1, layer, (440, 440), (224, 224), k_lines=20, panels={"composite"})
    with pytest.raises(InvalidInputError, match="query_size"):
        render_pair(img0, img1, layer, (0, 224), (224, 224), k_lines=20, panels={"composite"})


@pytest.mark.slow
def test_render_real_engine_result_on_sea_turtles(lite0_imagenet, seaturtle_dir):
    """The real engine on two real sea-turtle photos, drawn at display size and at input size."""
    from pairx_plugin import PairX
    from pairx_plugin.images import load_image, prepare_image
    from pairx_plugin.pretrained import IMAGENET_MEAN, IMAGENET_STD

    query = prepare_image(load_image(seaturtle_dir / "images/identity_a/image_1.JPG"), 224, IMAGENET_MEAN, IMAGENET_STD)
    candidate = prepare_image(
        load_image(seaturtle_dir / "images/identity_a/image_2.JPG"), 224, IMAGENET_MEAN, IMAGENET_STD
    )
    engine = PairX(lite0_imagenet, layer_keys=["blocks.3"], k_lines=8, k_colors=4)
    pair = engine.explain_pair(query.tensor, candidate.tensor)
    layer = pair.layers["blocks.3"]
    assert len(layer.matches) > 0
    args = (query.display, candidate.display, layer, pair.query_size, pair.candidate_size)
    out = render_pair(*args, k_lines=8, panels=set(PANELS))
    again = render_pair(*args, k_lines=8, panels=set(PANELS))
    assert all(out[role].png == again[role].png for role in out)

    composite = decode(out["composite"])
    assert composite.shape == (2 * 224, 2 * 224, 3)
    # every match's query end point is ringed by its line colour in the top row
    top = decode(out["only_lines"])
    for index, match in enumerate(layer.matches):
        x, y = (int(round(v - 0.5)) for v in match.query_xy)
        ring = top[max(0, y - 4) : y + 5, max(0, x - 4) : x + 5].reshape(-1, 3)
        assert (ring == colormaps.line_colour(index)).all(axis=1).any(), index
    # overlays line up with the untouched display images
    for side, loaded in (("query", query), ("candidate", candidate)):
        height, width = loaded.display.shape[:2]
        for kind in ("heatmap", "points", "colors"):
            assert decode(out[f"overlay_{kind}_{side}"]).shape == (height, width, 4)
        np.testing.assert_array_equal(decode(out[f"display_{side}"]), loaded.display)
    points = decode(out["overlay_points_query"])
    height, width = query.display.shape[:2]
    for match in layer.matches:
        x = int(round(match.query_xy[0] * width / 224 - 0.5))
        y = int(round(match.query_xy[1] * height / 224 - 0.5))
        assert points[y, x, 3] == 255
    # the colour maps sit where the pixel relevance is
    colours = decode(out["overlay_colors_query"])[..., 3].astype(float)
    relevance = np.asarray(
        Image.fromarray(layer.pixel_relevance_query.sum(axis=0)).resize((width, height), Image.BILINEAR)
    )
    hot = relevance > np.quantile(relevance, 0.99)
    cold = relevance <= 0
    assert hot.any() and cold.any()
    assert colours[hot].mean() > 10 * max(colours[cold].mean(), 1.0)
