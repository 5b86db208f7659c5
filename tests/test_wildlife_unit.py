"""Fast tests of the wildlife-tools adapter's pieces (no engine): top-k, image source, records,
registration, configuration errors, the synthetic set's geometry and the line-landing metric."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.transforms as T

import pairx_wildlife_tools as pw
from pairx_plugin.errors import ConfigError, InvalidInputError, PairXError
from pairx_plugin.pretrained import IMAGENET_MEAN, IMAGENET_STD
from pairx_wildlife_tools.correspondence import LineScore, landed_lines, summarise
from pairx_wildlife_tools.synthetic import generate_synthetic_set

TRANSFORM = T.Compose([T.Resize((224, 224)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


@pytest.fixture()
def turtle_metadata(seaturtle_dir):
    return pd.read_csv(seaturtle_dir / "metadata.csv")


def _dataset(metadata, root, **kwargs):
    from wildlife_tools.data import WildlifeDataset

    return WildlifeDataset(metadata, str(root), transform=kwargs.pop("transform", TRANSFORM), **kwargs)


# --------------------------------------------------------------------------- similarity and top-k


def test_similarity_matrix_accepts_both_api_generations():
    m = np.array([[0.1, 0.9], [0.4, 0.3]], dtype=np.float32)
    assert np.array_equal(pw.similarity_matrix({"cosine": m}), m)  # 0.0.9
    assert np.array_equal(pw.similarity_matrix({"default": m}), m)  # early 1.x
    assert np.array_equal(pw.similarity_matrix(m), m)  # 1.x
    assert np.array_equal(pw.similarity_matrix(torch.from_numpy(m)), m)
    assert np.array_equal(pw.similarity_matrix({"a": m, "b": m * 0}, key="b"), m * 0)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"a": np.eye(2), "b": np.eye(2)}, r"several matrices \['a', 'b'\]; pass key="),
        (np.ones(3), r"2-D n_query x n_database matrix, got shape \(3,\)"),
        (np.array([[np.nan, 1.0]]), "NaN or \\+inf"),
        ("not a matrix", "not a numeric matrix"),
    ],
)
def test_similarity_matrix_rejects_bad_input(bad, match):
    with pytest.raises(InvalidInputError, match=match):
        pw.similarity_matrix(bad)


def test_similarity_matrix_unknown_key():
    with pytest.raises(InvalidInputError, match=r"no key 'x'; it has \['cosine'\]"):
        pw.similarity_matrix({"cosine": np.eye(2)}, key="x")


def test_top_k_orders_skips_self_and_masked_pairs():
    m = np.array([[1.0, 0.2, 0.8, 0.8], [0.5, 1.0, -np.inf, 0.1]])
    rows = pw.top_k(m, 3, query_ids=["a", "b"], database_ids=["a", "b", "c", "d"])
    got = [(r.query_index, r.database_index, r.rank, r.score) for r in rows]
    # ties keep column order; "a" never matches itself; -inf is never returned
    assert got == [(0, 2, 0, 0.8), (0, 3, 1, 0.8), (0, 1, 2, 0.2), (1, 0, 0, 0.5), (1, 3, 1, 0.1)]


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_top_k_rejects_bad_k(k):
    with pytest.raises(InvalidInputError, match=f"k={k!r}"):
        pw.top_k(np.eye(2), k)


def test_top_k_rejects_mismatched_datasets():
    with pytest.raises(InvalidInputError, match="3 query rows but the query dataset has 2 images"):
        pw.top_k(np.eye(3), 1, query_ids=["a", "b"], database_ids=["a", "b", "c"])
    with pytest.raises(InvalidInputError, match="3 database columns but the database dataset has 1"):
        pw.top_k(np.eye(3), 1, query_ids=["a", "b", "c"], database_ids=["a"])


def test_from_topk_classifier_reads_1x_triple():
    labels = np.array([["x", "y"], ["y", "x"]])
    scores = np.array([[0.9, 0.5], [0.8, 0.1]])
    index = np.array([[3, 0], [1, 2]])
    rows = pw.from_topk_classifier((labels, scores, index))
    assert [(r.query_index, r.database_index, r.rank, r.score) for r in rows] == [
        (0, 3, 0, 0.9),
        (0, 0, 1, 0.5),
        (1, 1, 0, 0.8),
        (1, 2, 1, 0.1),
    ]
    with pytest.raises(InvalidInputError, match="return_all=True"):
        pw.from_topk_classifier(labels)
    with pytest.raises(InvalidInputError, match="must both be n_query x k"):
        pw.from_topk_classifier((labels, scores, index[:, :1]))
    masked = np.array([[0.9, -np.inf], [-np.inf, -np.inf]])  # e.g. an image against itself
    rows = pw.from_topk_classifier((labels, masked, index))
    assert [(r.query_index, r.database_index, r.rank) for r in rows] == [(0, 3, 0)]


# --------------------------------------------------------------------------- images and records


def test_image_source_gives_the_scored_tensor_and_an_aligned_display(turtle_metadata, seaturtle_dir):
    metadata = turtle_metadata.copy()
    metadata["bbox"] = [json.dumps([40, 30, 300, 200])] * len(metadata)
    dataset = _dataset(metadata, seaturtle_dir, img_load="bbox")
    source = pw.DatasetImageSource([dataset])
    loaded = source.load("image_3")
    scored, _ = dataset[2]  # what DeepFeatures feeds the model
    assert torch.equal(loaded.tensor[0], scored)
    assert loaded.display.shape == (224, 224, 3) and loaded.display.dtype == np.uint8
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    unnormalised = (scored * std + mean).permute(1, 2, 0).numpy() * 255
    assert np.abs(loaded.display.astype(float) - unnormalised).max() <= 1.0  # same crop, same resize
    assert source.crop("image_3").size == (300, 200)  # the bbox crop, before the transform
    assert dataset.transform is TRANSFORM and dataset.load_label  # the user's dataset is untouched


def test_image_source_falls_back_to_resizing_the_crop(turtle_metadata, seaturtle_dir):
    dataset = _dataset(turtle_metadata, seaturtle_dir, transform=lambda img: TRANSFORM(img))  # not a Compose
    loaded = pw.DatasetImageSource([dataset]).load("image_1")
    assert loaded.display.shape == (224, 224, 3)
    assert torch.equal(loaded.tensor[0], dataset[0][0])


def test_image_source_bad_inputs(turtle_metadata, seaturtle_dir, tmp_path):
    source = pw.DatasetImageSource([_dataset(turtle_metadata, seaturtle_dir)])
    with pytest.raises(InvalidInputError, match="image id 'nope' is in neither the query nor the database"):
        source.load("nope")
    with pytest.raises(InvalidInputError, match="has no transform"):
        pw.DatasetImageSource([_dataset(turtle_metadata, seaturtle_dir, transform=None)]).load("image_1")
    broken = turtle_metadata.copy()
    broken.loc[0, "path"] = "images/missing.jpg"
    with pytest.raises(InvalidInputError, match=r"cannot load image 'image_1' \('images/missing.jpg'\)"):
        pw.DatasetImageSource([_dataset(broken, seaturtle_dir)]).load("image_1")
    other = turtle_metadata.copy()
    other.loc[0, "path"] = other.loc[1, "path"]
    with pytest.raises(InvalidInputError, match="image id 'image_1' names two different files"):
        pw.DatasetImageSource([_dataset(turtle_metadata, seaturtle_dir), _dataset(other, seaturtle_dir)])
    dupes = turtle_metadata.copy()
    dupes.loc[1, "image_id"] = "image_1"
    with pytest.raises(InvalidInputError, match=r"repeats ids \['image_1'\]; give every image a unique id"):
        pw.DatasetImageSource([_dataset(dupes, seaturtle_dir)])
    with pytest.raises(InvalidInputError, match="has no 'metadata' table"):
        pw.DatasetImageSource([object()])


def test_records_carry_ids_labels_and_matrix_positions(turtle_metadata, seaturtle_dir):
    dataset = _dataset(turtle_metadata, seaturtle_dir)
    rows = pw.top_k(
        np.array([[1.0, 0.3, 0.7, 0.1]]),
        2,
        query_ids=["image_1"],
        database_ids=["image_1", "image_2", "image_3", "image_4"],
    )
    records = pw.records_from_candidates(rows, _dataset(turtle_metadata.iloc[:1], seaturtle_dir), dataset)
    assert [(r.query_id, r.candidate_id, r.rank, r.score, r.query_label, r.candidate_label) for r in records] == [
        ("image_1", "image_3", 0, 0.7, "a", "b"),
        ("image_1", "image_2", 1, 0.3, "a", "a"),
    ]
    assert records[0].extras == {"query_index": 0, "database_index": 2}
    frame = pw.records_to_frame(records)
    assert list(frame["same_identity"]) == [False, True]
    assert frame["cosine"].isna().all() and frame["error"].isna().all()


# --------------------------------------------------------------------------- classifier wrapper, registration


def test_registration_is_idempotent_and_detects_conflicts(monkeypatch):
    from wildlife_tools.tools import Store

    assert "PairXKnnClassifier" in Store()  # registered at import
    before = dict(Store.modules)
    assert pw.register() == {"PairXKnnClassifier": ("pairx_wildlife_tools.classifier", "PairXKnnClassifier")}
    assert Store.modules == before
    monkeypatch.setitem(Store.modules, "PairXKnnClassifier", ("someone.else", "Thing"))
    with pytest.raises(PairXError, match="already has 'PairXKnnClassifier'"):
        pw.register()


def test_unbound_classifier_says_what_to_bind():
    classifier = pw.PairXKnnClassifier(k=1, database_labels=np.array(["a", "b"]))
    with pytest.raises(ConfigError, match=r"needs query_dataset, database_dataset, extractor \(or model\).*\.bind\("):
        classifier(np.array([[0.1, 0.9]]))


def test_disabled_classifier_is_plain_knn():
    from wildlife_tools.inference import KnnClassifier

    sim = np.array([[0.1, 0.9, 0.3], [0.8, 0.2, 0.1]])
    labels = np.array(["a", "b", "c"])
    classifier = pw.PairXKnnClassifier(k=1, database_labels=labels, pairx={"enabled": False})
    assert list(classifier({"cosine": sim})) == list(KnnClassifier(k=1, database_labels=labels)(sim)) == ["b", "a"]
    assert classifier.records == []


def test_classifier_rejects_both_classifier_and_its_settings():
    with pytest.raises(ConfigError, match=r"\['return_scores'\] configure the KnnClassifier"):
        pw.PairXKnnClassifier(classifier=lambda s: s, return_scores=True)


def test_realize_reports_bad_pairx_section_by_key():
    from wildlife_tools.tools import realize

    with pytest.raises(ConfigError, match=r"pairx\.k_lines: must be >= 1, got 0"):
        realize({"method": "PairXKnnClassifier", "k": 1, "pairx": {"k_lines": 0}})
    with pytest.raises(ConfigError, match=r"pairx\.colour: unknown key"):
        realize({"method": "PairXKnnClassifier", "pairx": {"colour": "red"}})
    with pytest.raises(ConfigError, match="pairx: must be a mapping"):
        realize({"method": "PairXKnnClassifier", "pairx": [1, 2]})


# --------------------------------------------------------------------------- synthetic set and line metric


def test_synthetic_set_is_reproducible_and_validated(tmp_path):
    a = generate_synthetic_set(tmp_path / "a", animals=2, sightings=2, seed=7)
    b = generate_synthetic_set(tmp_path / "b", animals=2, sightings=2, seed=7)
    c = generate_synthetic_set(tmp_path / "c", animals=2, sightings=2, seed=8)
    first = (tmp_path / "a" / a.metadata.path[0]).read_bytes()
    assert first == (tmp_path / "b" / b.metadata.path[0]).read_bytes()
    assert first != (tmp_path / "c" / c.metadata.path[0]).read_bytes()
    assert list(a.metadata.columns) == ["image_id", "identity", "path", "bbox"]
    assert json.loads((tmp_path / "a" / "geometry.json").read_text()).keys() == a.sightings.keys()
    with pytest.raises(InvalidInputError, match="animals=1"):
        generate_synthetic_set(tmp_path / "d", animals=1)
    with pytest.raises(InvalidInputError, match="sightings=1"):
        generate_synthetic_set(tmp_path / "d", sightings=1)


def _model_input(root, sighting, size=224):
    image = cv2.cvtColor(cv2.imread(str(root / sighting.path)), cv2.COLOR_BGR2GRAY).astype(np.float64)
    x, y, w, h = sighting.bbox
    return cv2.resize(image[y : y + h, x : x + w], (size, size), interpolation=cv2.INTER_LINEAR)


def _ncc(a, b, mask):
    a, b = a[mask] - a[mask].mean(), b[mask] - b[mask].mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_known_warp_registers_one_sighting_onto_another(tmp_path):
    """The query->candidate map, applied to the query's model input, reproduces the candidate's."""
    synthetic = generate_synthetic_set(tmp_path, animals=2, sightings=3, seed=3)
    for q, c in [("animal_00_s0", "animal_00_s1"), ("animal_01_s2", "animal_01_s0")]:
        query = _model_input(tmp_path, synthetic.sightings[q])
        candidate = _model_input(tmp_path, synthetic.sightings[c])
        mapping = synthetic.query_to_candidate(q, c, (224, 224))
        warped = cv2.warpPerspective(query, mapping, (224, 224))
        inside = cv2.warpPerspective(np.ones_like(query), mapping, (224, 224)) > 0.99
        inside[:8], inside[-8:], inside[:, :8], inside[:, -8:] = False, False, False, False
        registered = _ncc(warped, candidate, inside)
        unregistered = _ncc(query, candidate, np.ones_like(inside))
        assert registered > 0.6, (q, c, registered)
        assert registered > unregistered + 0.2, (q, c, registered, unregistered)
    # the same map between two different animals aligns bodies, not markings
    other = _model_input(tmp_path, synthetic.sightings["animal_01_s1"])
    mapping = synthetic.query_to_candidate("animal_00_s0", "animal_01_s1", (224, 224))
    warped = cv2.warpPerspective(_model_input(tmp_path, synthetic.sightings["animal_00_s0"]), mapping, (224, 224))
    inside = cv2.warpPerspective(np.ones((224, 224)), mapping, (224, 224)) > 0.99
    assert _ncc(warped, other, inside) < 0.4


def test_landed_lines_against_a_known_shift():
    shift = np.array([[1, 0, 32], [0, 1, 0], [0, 0, 1]], float)  # two 16-px cells to the right
    query = np.array([[8.0, 8.0], [40.0, 56.0], [100.0, 20.0]])
    exact = query + [32, 0]
    hits, baseline = landed_lines(query, exact, shift, 16.0)
    assert hits.tolist() == [True, True, True]
    assert baseline == 0.0  # the other lines' ends are far from each true target
    hits, _ = landed_lines(query, query + [32 + 17, 0], shift, 16.0)  # just over one cell off
    assert hits.tolist() == [False, False, False]
    hits, _ = landed_lines(query, query, shift, 16.0)  # lines that ignore the shift
    assert not hits.any()
    with pytest.raises(InvalidInputError, match="must pair up one to one"):
        landed_lines(query, query[:2], shift, 16.0)
    with pytest.raises(InvalidInputError, match="cell_size=0"):
        landed_lines(query, query, shift, 0)


def test_summary_pools_lines_by_correctness():
    scores = [
        LineScore("q", "a", True, 10, 7, 1.0),
        LineScore("q", "b", True, 10, 5, 0.0),
        LineScore("q", "c", False, 20, 2, 2.0),
    ]
    summary = summarise(scores)
    assert (summary.correct_share, summary.correct_lines, summary.correct_matches) == (0.6, 20, 2)
    assert (summary.incorrect_share, summary.incorrect_lines, summary.incorrect_matches) == (0.1, 20, 1)
    assert summary.correct_baseline == pytest.approx(0.05) and summary.incorrect_baseline == pytest.approx(0.1)
    assert summarise([]).correct_share is None


def test_classifier_keeps_predictions_when_pairx_cannot_run(lite0_imagenet, seaturtle_dir, tmp_path):
    """An unknown layer key stops PAIR-X before any work; predictions stand, records carry the error."""
    from wildlife_tools.inference import KnnClassifier

    from pairx_plugin.artifacts.store import ArtifactStore

    metadata = pd.read_csv(seaturtle_dir / "metadata.csv")
    dataset = _dataset(metadata, seaturtle_dir)
    sim = np.array([[1.0, 0.8, 0.3, 0.2], [0.8, 1.0, 0.1, 0.4], [0.3, 0.1, 1.0, 0.6], [0.2, 0.4, 0.6, 1.0]])
    classifier = pw.PairXKnnClassifier(
        k=1,
        database_labels=dataset.labels_string,
        pairx={"top_k": 2, "layer_keys": ["no.such.layer"]},
        query_dataset=dataset,
        database_dataset=dataset,
        model=lite0_imagenet,
        store=ArtifactStore(tmp_path),
        progress=False,
    )
    with pytest.warns(RuntimeWarning, match="no.such.layer"):
        predictions = classifier(sim)
    assert list(predictions) == list(KnnClassifier(k=1, database_labels=dataset.labels_string)(sim))
    assert len(classifier.records) == 8
    assert [(r.query_id, r.candidate_id, r.score) for r in classifier.records[:2]] == [
        ("image_1", "image_2", 0.8),
        ("image_1", "image_3", 0.3),
    ]
    for record in classifier.records:
        assert record.explanation is None
        assert record.explanation_error.type == "LayerNotFoundError"
        assert "no.such.layer" in record.explanation_error.message


def test_image_source_rejects_a_transform_that_gives_no_tensor(turtle_metadata, seaturtle_dir):
    dataset = _dataset(turtle_metadata, seaturtle_dir, transform=lambda img: np.asarray(img))
    with pytest.raises(
        InvalidInputError, match=r"transform gave ndarray for 'image_1'; it must give a \(3, H, W\) tensor"
    ):
        pw.DatasetImageSource([dataset]).load("image_1")


def test_explaining_needs_a_model(turtle_metadata, seaturtle_dir):
    dataset = _dataset(turtle_metadata, seaturtle_dir)
    with pytest.raises(InvalidInputError, match="no model to explain: pass the DeepFeatures extractor"):
        pw.explain_similarity(np.eye(4), dataset, dataset, config={"output_dir": "unused"})
    with pytest.raises(InvalidInputError, match="extractor object has no 'model' attribute"):
        pw.explain_similarity(np.eye(4), dataset, dataset, object(), config={"output_dir": "unused"})


def test_register_is_a_no_op_on_a_wildlife_tools_without_config_store(monkeypatch):
    """1.x has no Store/realize: importing and registering must work and register nothing."""
    from wildlife_tools import tools

    from pairx_wildlife_tools import host

    class StoreWithoutTable:
        pass

    monkeypatch.setattr(tools, "Store", StoreWithoutTable)
    assert host.api_generation() == "1.x"
    assert pw.register() == {}


def test_line_scoring_reports_unreadable_artifacts_and_foreign_pairs(tmp_path):
    from pairx_plugin.errors import ArtifactError
    from pairx_plugin.records import ExplanationMetrics, ExplanationRef, MatchRecord
    from pairx_wildlife_tools.demo import score_lines
    from pairx_wildlife_tools.pipeline import PipelineResult

    synthetic = generate_synthetic_set(tmp_path / "data", animals=2, sightings=2, seed=1)
    ref = ExplanationRef(
        artifact_id="0" * 64,
        layer="blocks.3",
        json_path="artifacts/none/explanation.json",
        metrics=ExplanationMetrics(irm=None, mc=0.0, inlier_ratio=None, match_count=0),
        cosine=0.5,
    )

    def result(query, candidate):
        record = MatchRecord(query_id=query, candidate_id=candidate, rank=0, score=0.5).with_explanation([ref])
        return PipelineResult([record], np.array([]), np.array([]), 0.0, np.eye(2), "r", tmp_path, None)

    with pytest.raises(
        ArtifactError, match=r"cannot read artifact '.*artifacts/none/explanation.json' to score its lines"
    ):
        score_lines(result("animal_00_s0", "animal_01_s1"), synthetic)
    (tmp_path / "artifacts" / "none").mkdir(parents=True)
    (tmp_path / "artifacts" / "none" / "explanation.json").write_text("{}")
    with pytest.raises(ArtifactError, match="to score its lines"):
        score_lines(result("animal_00_s0", "animal_01_s1"), synthetic)


def test_without_self_matches_masks_only_same_ids():
    from pairx_wildlife_tools.pipeline import without_self_matches

    sim = np.array([[0.9, 0.5, 0.7], [0.4, 0.8, 0.6]], dtype=np.float32)
    masked = without_self_matches(sim, ["b", "x"], ["a", "b", "c"])
    assert masked.dtype == np.float64 and sim[0, 1] == 0.5  # a copy; the host's matrix is untouched
    assert np.isneginf(masked[0, 1]) and np.isfinite(np.delete(masked.ravel(), 1)).all()


def test_image_source_refuses_feature_datasets(turtle_metadata):
    from wildlife_tools.data import FeatureDataset

    features = FeatureDataset(np.zeros((4, 8), np.float32), turtle_metadata)
    with pytest.raises(InvalidInputError, match="pass the image datasets .* not the features"):
        pw.DatasetImageSource([features]).load("image_1")
