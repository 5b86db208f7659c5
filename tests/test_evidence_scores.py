"""Evidence components on engine results with known geometry and known foreground."""

from __future__ import annotations

import numpy as np
import pytest
from evidence_support import (
    CELL,
    SIZE,
    layer_from_cells,
    pair_of,
    scattered_cells,
    shifted_cells,
)

from pairx_plugin.errors import InvalidInputError
from pairx_plugin.evidence import pair_evidence
from pairx_plugin.evidence.foreground import as_mask, centre_prior, weights_at
from pairx_plugin.evidence.geometry import fit_similarity, weighted_ransac

ANIMAL_CELLS = [(x, y) for x in range(4, 9) for y in range(5, 8)]  # a 5x3 block in the middle


def animal_mask(x0: int, y0: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[int(y0 * CELL) : int((y0 + h) * CELL), int(x0 * CELL) : int((x0 + w) * CELL)] = True
    return mask


def test_weighted_ransac_recovers_a_similarity_among_outliers():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 200, size=(14, 2))
    angle, scale, shift = 0.3, 1.2, np.array([10.0, -5.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    q = p @ (scale * rotation).T + shift
    q[10:] = rng.uniform(0, 200, size=(4, 2))  # four outliers
    fit = weighted_ransac(p, q, np.ones(14), threshold=2.0)
    assert fit is not None
    assert fit.inliers[:10].all() and not fit.inliers[10:].any()
    assert fit.scale == pytest.approx(scale, rel=1e-6)
    assert np.allclose(fit.matrix[:, 2], shift, atol=1e-6)


def test_weighted_ransac_prefers_the_relevant_consensus_over_the_larger_one():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 200, size=(12, 2))
    q = p.copy()
    q[:4] += [40.0, 0.0]  # four heavy matches agree on one shift, eight light ones on another
    w = np.r_[np.full(4, 10.0), np.ones(8)]
    fit = weighted_ransac(p, q, w, threshold=2.0)
    assert fit.inliers[:4].all() and not fit.inliers[4:].any()
    unweighted = weighted_ransac(p, q, np.ones(12), threshold=2.0)
    assert unweighted.inliers[4:].all()


def test_weighted_ransac_needs_two_weighted_matches():
    assert weighted_ransac(np.zeros((1, 2)), np.zeros((1, 2)), np.ones(1), 1.0) is None
    assert weighted_ransac(np.eye(2) * 5, np.eye(2) * 5, np.array([1.0, 0.0]), 1.0) is None
    assert fit_similarity(np.ones((3, 2)), np.ones((3, 2)), np.ones(3)) is None  # all points equal


def test_consistent_matches_on_the_animal_score_high_and_scattered_ones_low():
    mask = animal_mask(3, 4, 8, 6)
    good = pair_of(layer_from_cells(shifted_cells(ANIMAL_CELLS, 1, 0)))
    rng = np.random.default_rng(4)
    wide = [(x, y) for x in range(3, 11) for y in range(4, 10)]  # the whole animal box
    targets = [wide[i] for i in rng.permutation(len(wide))[: len(ANIMAL_CELLS)]]
    bad = pair_of(layer_from_cells(list(zip(ANIMAL_CELLS, targets))))
    good_e = pair_evidence(good, query_foreground=mask, candidate_foreground=mask)["blocks.3"]
    bad_e = pair_evidence(bad, query_foreground=mask, candidate_foreground=mask)["blocks.3"]
    assert good_e.foreground == "mask"
    assert good_e.on_animal == pytest.approx(1.0)
    assert good_e.geometric == pytest.approx(1.0)
    assert good_e.inliers == len(ANIMAL_CELLS)
    assert good_e.score == pytest.approx(1.0 - np.exp(-len(ANIMAL_CELLS) / 4.0))
    assert bad_e.on_animal == pytest.approx(1.0)
    assert bad_e.geometric < 0.5
    assert bad_e.score < 0.5 * good_e.score


def test_background_matches_carry_no_evidence_however_consistent():
    background = [(x, y) for x in range(3) for y in range(4)]  # top-left corner, off the animal
    pair = pair_of(layer_from_cells(shifted_cells(background, 0, 0)))
    mask = animal_mask(5, 6, 6, 6)
    scores = pair_evidence(pair, query_foreground=mask, candidate_foreground=mask)["blocks.3"]
    assert scores.on_animal == 0.0
    assert scores.score == 0.0
    half = pair_of(
        layer_from_cells(
            shifted_cells(background, 0, 0) + shifted_cells(ANIMAL_CELLS[:6], 0, 0),
            relevance=[1.0] * len(background) + [2.0] * 6,
        )
    )
    scores = pair_evidence(half, query_foreground=animal_mask(4, 5, 5, 3), candidate_foreground=animal_mask(4, 5, 5, 3))
    assert scores["blocks.3"].on_animal == pytest.approx(12.0 / 24.0)


def test_box_and_centre_prior_are_named_and_prior_disfavours_corners():
    corner = pair_of(layer_from_cells(shifted_cells([(0, 0), (1, 0), (0, 1), (1, 1), (13, 13), (12, 13)], 0, 0)))
    middle = pair_of(layer_from_cells(shifted_cells(ANIMAL_CELLS, 0, 0)))
    assert pair_evidence(corner)["blocks.3"].foreground == "centre_prior"
    assert pair_evidence(corner)["blocks.3"].on_animal < 0.05
    assert pair_evidence(middle)["blocks.3"].on_animal > 0.9
    boxed = pair_evidence(middle, query_foreground=[0, 0, 112, 224], candidate_foreground=(0, 0, 112, 224))
    assert boxed["blocks.3"].foreground == "box"


def test_display_size_mask_is_scaled_to_the_input():
    mask = np.zeros((448, 448), np.uint8)  # display image twice the input size, mask in 0..255
    mask[:, :224] = 255
    w = weights_at(np.array([[56.0, 100.0], [168.0, 100.0]]), (SIZE, SIZE), (CELL, CELL), as_mask(mask, (448, 448)))
    assert w.tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (np.ones((10, 10)), "shape (10, 10)"),
        ([0, 0, 0, 10], "no area"),
        ([500, 500, 10, 10], "outside"),
        ("animal", "got str"),
    ],
)
def test_bad_foreground_is_named(value, fragment):
    pair = pair_of(layer_from_cells(shifted_cells(ANIMAL_CELLS, 0, 0)))
    with pytest.raises(InvalidInputError, match="candidate foreground") as info:
        pair_evidence(pair, candidate_foreground=value)
    assert fragment in str(info.value)


def test_distinctiveness_follows_the_ratio():
    pairs = shifted_cells(ANIMAL_CELLS, 0, 0)
    sharp = pair_evidence(pair_of(layer_from_cells(pairs, ratio=[0.2] * len(pairs))))["blocks.3"]
    blunt = pair_evidence(pair_of(layer_from_cells(pairs, ratio=[0.95] * len(pairs))))["blocks.3"]
    assert sharp.distinctiveness == pytest.approx(0.8)
    assert blunt.distinctiveness == pytest.approx(0.05)


def test_layers_that_agree_keep_their_score_and_disagreeing_ones_lose_it():
    shallow = layer_from_cells(
        shifted_cells([(2 * x, 2 * y) for x, y in ANIMAL_CELLS[:8]], 2, 0), key="blocks.2", grid=28
    )
    deep = layer_from_cells(shifted_cells(ANIMAL_CELLS, 1, 0), key="blocks.3")
    agree = pair_evidence(pair_of(deep, shallow))
    assert agree["blocks.3"].layer_agreement == pytest.approx(1.0)
    assert agree["blocks.2"].layer_agreement == pytest.approx(1.0)
    for scores in agree.values():  # shares that sum past 1 by rounding must still read back
        assert 0.0 <= scores.layer_agreement <= 1.0
        assert type(scores).model_validate_json(scores.model_dump_json()) == scores
    other = layer_from_cells(scattered_cells(12, seed=3), key="blocks.2", grid=28)
    disagree = pair_evidence(pair_of(deep, other))
    assert disagree["blocks.3"].layer_agreement < 0.5
    assert disagree["blocks.3"].score < agree["blocks.3"].score
    assert pair_evidence(pair_of(deep))["blocks.3"].layer_agreement is None


def test_no_matches_is_zero_evidence():
    scores = pair_evidence(pair_of(layer_from_cells([])))["blocks.3"]
    assert scores.score == 0.0 and scores.inliers == 0 and scores.scale is None


def test_centre_prior_shape():
    prior = centre_prior((100, 60))
    assert prior.shape == (100, 60)
    assert prior[50, 30] == 1.0 and prior[0, 0] == 0.0
