"""Curator lines: the most relevant on-animal matches that agree on one pose, chosen after the engine.

The selection rule on constructed matches (expected choice from the construction, not from the code),
the fall-backs to the published lines, the ``pairx.lines`` switch, the artifact field (round trip,
older documents), the panels and the review page drawing the chosen lines, and the demo's figures.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from evidence_support import CELL, SIZE
from PIL import Image

from pairx_plugin.artifacts import colormaps
from pairx_plugin.artifacts.render import render_pair
from pairx_plugin.artifacts.schema import SCHEMA_VERSION, ExplanationArtifact
from pairx_plugin.artifacts.store import ArtifactStore
from pairx_plugin.config import PairXConfig
from pairx_plugin.engine.results import LayerExplanation, Match, PairExplanation, PairMetrics
from pairx_plugin.errors import ConfigError
from pairx_plugin.evidence.lines import FIT_MATCHES, choose_curator_lines, curator_lines_for, select_on_animal
from pairx_plugin.hook import LoadedImage, explain_matches
from pairx_plugin.records import MatchRecord

#: the animal: cells x in 3..10, y in 4..9 of the 14 x 14 grid (16-px cells, 224-px images)
ANIMAL_CELLS = (range(3, 11), range(4, 10))


def animal_mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    xs, ys = ANIMAL_CELLS
    mask[int(ys[0] * CELL) : int((ys[-1] + 1) * CELL), int(xs[0] * CELL) : int((xs[-1] + 1) * CELL)] = True
    return mask


def on_animal(cell: tuple[int, int]) -> bool:
    return cell[0] in ANIMAL_CELLS[0] and cell[1] in ANIMAL_CELLS[1]


def centre(cell: tuple[int, int]) -> tuple[float, float]:
    return ((cell[0] + 0.5) * CELL, (cell[1] + 0.5) * CELL)


def match(q: tuple[int, int], c: tuple[int, int], relevance: float) -> Match:
    return Match(q, c, centre(q), centre(c), relevance=relevance, distance=1.0, ratio=0.5)


def scene_matches() -> tuple[list[Match], set[int]]:
    """Matches sorted by relevance, and the indices a curator should see (built, not computed by the rule).

    On the animal: 10 matches shifted by one cell (the true pose), 3 on-animal matches far off it.
    Background: 8 matches under the same shift with the highest relevance (they must not be drawn).
    """
    rng = np.random.default_rng(3)
    items: list[tuple[tuple[int, int], tuple[int, int], float, bool]] = []
    animal = [(x, y) for x in range(3, 10) for y in range(4, 10)]
    for q in [animal[i] for i in rng.choice(len(animal), 13, replace=False)][:10]:
        items.append((q, (q[0] + 1, q[1]), float(rng.uniform(1.0, 5.0)), True))
    for q, c in [((3, 4), (10, 9)), ((9, 9), (3, 5)), ((4, 8), (9, 4))]:
        items.append((q, c, float(rng.uniform(1.0, 5.0)), False))
    for q in [(0, y) for y in range(8)]:
        items.append((q, (q[0] + 1, q[1]), float(rng.uniform(6.0, 9.0)), False))  # background, most relevant
    items.sort(key=lambda item: -item[2])
    matches = [match(q, c, r) for q, c, r, _ in items]
    wanted = {i for i, item in enumerate(items) if item[3]}
    assert all(on_animal(matches[i].query_cell) and on_animal(matches[i].candidate_cell) for i in wanted)
    return matches, wanted


def layer_with(mutual: list[Match], k_lines: int, colour_maps: int = 0) -> LayerExplanation:
    pixels = np.zeros((colour_maps, SIZE, SIZE), np.float32)
    return LayerExplanation(
        key="blocks.3",
        relevance_query=np.ones((14, 14), np.float32),
        relevance_candidate=np.ones((14, 14), np.float32),
        matches=mutual[:k_lines],
        pixel_relevance_query=pixels,
        pixel_relevance_candidate=pixels.copy(),
        metrics=PairMetrics(irm=None, mc=1.0, inlier_ratio=None, match_count=len(mutual)),
        mutual_matches=mutual,
    )


def arrays(matches: list[Match]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    p = np.array([m.query_xy for m in matches])
    q = np.array([m.candidate_xy for m in matches])
    r = np.array([m.relevance for m in matches])
    f = np.array([float(on_animal(m.query_cell) and on_animal(m.candidate_cell)) for m in matches])
    return p, q, r, f


# --------------------------------------------------------------------------- the rule


def test_the_rule_draws_the_consistent_on_animal_matches_most_relevant_first():
    matches, wanted = scene_matches()
    p, q, r, f = arrays(matches)
    chosen = select_on_animal(p, q, r, f, 1.5 * CELL, k=20)
    assert chosen.tolist() == sorted(wanted)  # matches are sorted by relevance, so index order is relevance order
    top = select_on_animal(p, q, r, f, 1.5 * CELL, k=4)
    assert top.tolist() == sorted(wanted)[:4]
    assert select_on_animal(p, q, r, f, 1.5 * CELL, k=0).tolist() == []


def test_the_rule_orders_by_relevance_whatever_the_input_order():
    matches, wanted = scene_matches()
    shuffled = np.random.default_rng(0).permutation(len(matches))
    p, q, r, f = arrays([matches[i] for i in shuffled])
    chosen = select_on_animal(p, q, r, f, 1.5 * CELL, k=20)
    assert sorted(shuffled[chosen].tolist()) == sorted(wanted)
    assert list(r[chosen]) == sorted(r[chosen], reverse=True)


def test_random_scenes_draw_every_on_animal_match_the_true_pose_explains():
    """A true shift for 8 matches, random matches elsewhere, random foreground: the expected lines are the
    on-animal matches within 1.5 cells of the true shift, found by checking each match against it."""
    rng = np.random.default_rng(11)
    for trial in range(6):
        n = 20
        qc = rng.integers(0, 14, size=(n, 2)).astype(float)
        cc = rng.integers(0, 14, size=(n, 2)).astype(float)
        shift = rng.integers(-3, 4, size=2).astype(float)
        cc[:8] = qc[:8] + shift
        r = np.concatenate([rng.uniform(1.0, 2.0, 8), rng.uniform(0.1, 1.0, n - 8)])
        f = np.concatenate([np.ones(7), (rng.uniform(size=n - 7) < 0.7)]).astype(float)
        order = rng.permutation(n)
        p, q, r, f = (qc[order] + 0.5) * CELL, (cc[order] + 0.5) * CELL, r[order], f[order]
        chosen = select_on_animal(p, q, r, f, 1.5 * CELL, k=50)
        expected = [i for i in range(n) if f[i] >= 0.5 and np.linalg.norm(p[i] + shift * CELL - q[i]) <= 1.5 * CELL]
        assert sorted(chosen.tolist()) == sorted(expected), f"trial {trial}"
        assert list(r[chosen]) == sorted(r[chosen], reverse=True)


def test_under_two_on_animal_matches_those_are_drawn():
    matches, _ = scene_matches()
    p, q, r, _ = arrays(matches)
    f = np.zeros(len(matches))
    assert select_on_animal(p, q, r, f, 1.5 * CELL, k=20).tolist() == []
    f[5] = 1.0
    assert select_on_animal(p, q, r, f, 1.5 * CELL, k=20).tolist() == [5]


def test_the_fit_sees_only_the_most_relevant_on_animal_matches():
    n = FIT_MATCHES + 10
    cells = list(itertools.islice(itertools.product(range(14), range(14)), n))
    r = np.linspace(2.0, 1.0, n)
    p = np.array([centre(c) for c in cells])
    q = p + (2 * CELL, 0.0)
    chosen = select_on_animal(p, q, r, np.ones(n), 1.5 * CELL, k=n)
    assert chosen.tolist() == list(range(FIT_MATCHES))


def test_inputs_that_do_not_pair_up_are_refused():
    with pytest.raises(ValueError, match="must be equal"):
        select_on_animal(np.zeros((3, 2)), np.zeros((3, 2)), np.ones(3), np.ones(2), 1.0, 5)


# --------------------------------------------------------------------------- choosing for a layer


def test_a_layer_with_both_foregrounds_gets_foreground_lines():
    matches, wanted = scene_matches()
    layer = layer_with(matches, k_lines=5)
    choice = choose_curator_lines(
        layer,
        k_lines=5,
        setting="auto",
        input_size=((SIZE, SIZE), (SIZE, SIZE)),
        query_foreground=animal_mask(),
        candidate_foreground=animal_mask(),
    )
    assert choice.selection == "foreground"
    assert choice.matches == [matches[i] for i in sorted(wanted)[:5]]
    assert not set(map(id, choice.matches)) & {id(m) for m in layer.matches if not on_animal(m.query_cell)}


def test_a_box_at_another_display_size_selects_the_same_lines():
    matches, wanted = scene_matches()
    xs, ys = ANIMAL_CELLS
    box = [xs[0] * CELL * 2, ys[0] * CELL * 2, len(xs) * CELL * 2, len(ys) * CELL * 2]  # display is 2x the input
    choice = choose_curator_lines(
        layer_with(matches, 20),
        k_lines=20,
        setting="auto",
        input_size=((SIZE, SIZE), (SIZE, SIZE)),
        query_foreground=box,
        candidate_foreground=box,
        display_size=((2 * SIZE, 2 * SIZE), (2 * SIZE, 2 * SIZE)),
    )
    assert choice.selection == "foreground" and choice.matches == [matches[i] for i in sorted(wanted)]


@pytest.mark.parametrize(
    ("setting", "query_fg", "candidate_fg", "keep_mutual"),
    [
        ("relevance", True, True, True),  # the user forces the published lines
        ("auto", True, False, True),  # one side has no foreground: the centre prior is a guess
        ("auto", False, False, True),
        ("auto", True, True, False),  # rebuilt from stored data: no complete match list
    ],
)
def test_otherwise_the_published_top_lines_are_drawn(setting, query_fg, candidate_fg, keep_mutual):
    matches, _ = scene_matches()
    layer = layer_with(matches, k_lines=7)
    if not keep_mutual:
        layer.mutual_matches = []
    choice = choose_curator_lines(
        layer,
        k_lines=7,
        setting=setting,
        input_size=((SIZE, SIZE), (SIZE, SIZE)),
        query_foreground=animal_mask() if query_fg else None,
        candidate_foreground=animal_mask() if candidate_fg else None,
    )
    assert choice.selection == "relevance" and choice.matches == matches[:7]


def test_a_bad_foreground_keeps_the_published_lines_and_logs(caplog):
    matches, _ = scene_matches()
    layer = layer_with(matches, k_lines=6)
    pair = PairExplanation(0.5, {"blocks.3": layer}, (SIZE, SIZE), (SIZE, SIZE), "conservative", "zennit-lrp")
    image = LoadedImage(tensor=torch.zeros(1, 3, SIZE, SIZE), display=np.zeros((SIZE, SIZE, 3), np.uint8))
    bad = LoadedImage(tensor=image.tensor, display=image.display, foreground=animal_mask())
    object.__setattr__(bad, "foreground", [0, 0, 0, 5])  # no area: refused by as_mask
    with caplog.at_level(logging.ERROR):
        choice = curator_lines_for(layer, pair, bad, bad, k_lines=6, setting="auto")
    assert choice.selection == "relevance" and choice.matches == matches[:6]
    assert "curator lines failed" in caplog.text and "has no area" in caplog.text


# --------------------------------------------------------------------------- config


def test_the_lines_switch_is_validated_and_part_of_the_digest():
    assert PairXConfig().lines == "auto"
    assert PairXConfig(lines="relevance").digest() != PairXConfig().digest()
    with pytest.raises(ConfigError, match=r"pairx\.lines: must be one of 'auto' or 'relevance', got 'animal'"):
        PairXConfig(lines="animal")


# --------------------------------------------------------------------------- through the hook into the artifact


class SceneEngine:
    """Stands in for ``PairX``: every candidate gets :func:`scene_matches` with its complete list."""

    layer_keys = ["blocks.3"]

    def __init__(self, k_lines: int, colour_maps: int) -> None:
        self.k_lines, self.colour_maps = k_lines, colour_maps

    def explain_query(self, query, candidates, *, return_exceptions=False):
        matches, _ = scene_matches()
        layer = layer_with(matches, self.k_lines, self.colour_maps)
        return [
            PairExplanation(0.5, {"blocks.3": layer}, (SIZE, SIZE), (SIZE, SIZE), "conservative", "zennit-lrp")
            for _ in candidates
        ]


class Images:
    def __init__(self, foreground: bool) -> None:
        self.foreground = foreground

    def load(self, image_id: str) -> LoadedImage:
        value = {"q": 0, "c": 1}[image_id]
        return LoadedImage(
            tensor=torch.full((1, 3, SIZE, SIZE), float(value)),
            display=np.full((SIZE, SIZE, 3), 100 + 50 * value, np.uint8),
            foreground=animal_mask() if self.foreground else None,
        )


def explain(
    tmp_path, config: PairXConfig, foreground: bool = True, colour_maps: int = 2
) -> tuple[ExplanationArtifact, ArtifactStore]:
    store = ArtifactStore(tmp_path / "store")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    out = explain_matches(
        records=[MatchRecord(query_id="q", candidate_id="c", rank=0, score=0.9)],
        images=Images(foreground),
        model=model,
        config=config,
        store=store,
        engine=SceneEngine(config.k_lines, colour_maps),
        progress=False,
        run_name="lines",
    )
    assert out[0].explanation is not None, out[0].explanation_error
    return store.load(out[0].explanation.artifact_id), store


def test_the_artifact_keeps_the_published_matches_and_adds_the_curator_lines(tmp_path):
    matches, wanted = scene_matches()
    artifact, _ = explain(tmp_path, PairXConfig(k_lines=6, k_colors=2))
    assert artifact.schema_version == SCHEMA_VERSION == "1.3.0"
    assert [(m.query_cell, m.candidate_cell) for m in artifact.matches] == [
        (m.query_cell, m.candidate_cell) for m in matches[:6]
    ]
    assert artifact.curator_lines is not None and artifact.curator_lines.selection == "foreground"
    drawn = [matches[i] for i in sorted(wanted)[:6]]
    assert [(m.query_cell, m.candidate_cell) for m in artifact.curator_lines.matches] == [
        (m.query_cell, m.candidate_cell) for m in drawn
    ]
    assert all(m.color_index is None for m in artifact.curator_lines.matches)  # the colour maps are of the top 2
    again = ExplanationArtifact.model_validate_json(artifact.model_dump_json())
    assert again == artifact


def test_colour_maps_follow_the_match_into_the_curator_lines(tmp_path):
    matches, wanted = scene_matches()
    artifact, _ = explain(tmp_path, PairXConfig(k_lines=20, k_colors=10), colour_maps=10)
    published_index = {m.query_cell: i for i, m in enumerate(matches)}
    colours = [m.color_index for m in artifact.curator_lines.matches]
    expected = [
        published_index[m.query_cell] if published_index[m.query_cell] < 10 else None
        for m in artifact.curator_lines.matches
    ]
    assert colours == expected and any(c is not None for c in colours) and any(c is None for c in colours)


def test_without_foreground_or_when_forced_the_curator_lines_are_the_published_ones(tmp_path):
    for config, foreground in ((PairXConfig(k_lines=6), False), (PairXConfig(k_lines=6, lines="relevance"), True)):
        artifact, _ = explain(tmp_path / str(foreground), config, foreground)
        assert artifact.curator_lines is not None and artifact.curator_lines.selection == "relevance"
        assert artifact.curator_lines.matches == [
            m.model_copy(update={"supports_evidence": None}) for m in artifact.matches
        ]


def test_older_documents_load_without_curator_lines(tmp_path):
    old = next((Path(__file__).parent / "data" / "store_v1_0" / "artifacts").rglob("explanation.json"))
    document = ExplanationArtifact.model_validate_json(old.read_text())
    assert document.schema_version == "1.0.0" and document.curator_lines is None
    artifact, _ = explain(tmp_path, PairXConfig(k_lines=6))
    payload = json.loads(artifact.model_dump_json())
    del payload["curator_lines"]
    payload["schema_version"] = "1.2.0"
    assert ExplanationArtifact.model_validate(payload).curator_lines is None


# --------------------------------------------------------------------------- drawing


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_the_panel_draws_the_curator_lines_not_the_published_ones():
    matches, wanted = scene_matches()
    layer = layer_with(matches, k_lines=20)
    display = np.full((SIZE, SIZE, 3), 128, np.uint8)
    chosen = [matches[i] for i in sorted(wanted)]
    published = render_pair(display, display, layer, (SIZE, SIZE), (SIZE, SIZE), k_lines=20, panels={"overlays"})
    curator = render_pair(
        display, display, layer, (SIZE, SIZE), (SIZE, SIZE), k_lines=20, panels={"overlays"}, lines=chosen
    )
    background = matches[0]  # the most relevant match is off the animal
    assert not on_animal(background.query_cell)
    x, y = (int(v) for v in background.query_xy)
    assert decode(published["overlay_lines_pair"].png)[y, x, 3] == 255
    assert decode(curator["overlay_lines_pair"].png)[y, x, 3] == 0
    first = chosen[0]
    x, y = (int(v) for v in first.query_xy)
    assert tuple(decode(curator["overlay_lines_pair"].png)[y, x]) == colormaps.line_colour(0) + (255,)


def test_stored_panels_and_the_review_page_draw_the_curator_lines(tmp_path):
    from pairx_plugin.artifacts.compact import render_stored
    from pairx_plugin.artifacts.review import read_manifest_entries, read_page_data, render_review_html

    matches, wanted = scene_matches()
    artifact, store = explain(tmp_path, PairXConfig(k_lines=20))
    panels = render_stored(store, artifact.artifact_id, {"overlays"})
    lines = decode(panels["overlay_lines_pair"].png)
    x, y = (int(v) for v in matches[0].query_xy)  # the most relevant, background match
    assert lines[y, x, 3] == 0
    x, y = (int(v) for v in matches[min(wanted)].query_xy)
    assert lines[y, x, 3] == 255
    entries = read_manifest_entries(store.manifest_path("lines"))
    data = read_page_data(render_review_html(entries, store.root, store.root, title="t"))
    record = data["queries"][0]["records"][0]
    assert record["lines"] == "foreground"
    assert [m[:2] for m in record["matches"]] == [
        [round(v, 2) for v in m.query_display_xy] for m in artifact.curator_lines.matches
    ]
