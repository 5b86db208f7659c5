"""The real wildlife-tools 0.0.9 pipeline on the 4 sea-turtle images, with PAIR-X switched on.

WildlifeDataset (no split: every image queries the others) → DeepFeatures (ImageNet
EfficientNet-Lite0) → CosineSimilarity ({"cosine": matrix}) → PairXKnnClassifier. Every top-k record
must carry a schema-valid artifact whose explained cosine is the pipeline's similarity score.
"""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.transforms as T

import pairx_wildlife_tools as pw
from pairx_plugin.artifacts.review import read_page_data, write_review_page
from pairx_plugin.artifacts.schema import ExplanationArtifact, json_schemas
from pairx_plugin.artifacts.store import ArtifactStore
from pairx_plugin.pretrained import IMAGENET_MEAN, IMAGENET_STD

pytestmark = pytest.mark.slow
TOP_K = 3
PAIRX = {"top_k": TOP_K, "k_lines": 20, "k_colors": 2, "render": ["composite", "heatmaps"]}


def _transform():
    return T.Compose([T.Resize((224, 224)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _model_state(model):
    return {
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
    }


@pytest.fixture(scope="module")
def turtle_run(seaturtle_dir, lite0_imagenet, tmp_path_factory):
    from wildlife_tools.data import WildlifeDataset
    from wildlife_tools.features import DeepFeatures
    from wildlife_tools.similarity import CosineSimilarity

    torch.set_num_threads(1)
    metadata = pd.read_csv(seaturtle_dir / "metadata.csv")
    dataset = WildlifeDataset(metadata, str(seaturtle_dir), transform=_transform())  # no split function
    extractor = DeepFeatures(lite0_imagenet, batch_size=4, num_workers=0, device="cpu")
    before = _model_state(lite0_imagenet)
    features = extractor(dataset)
    similarity = CosineSimilarity()(features, features)  # 0.0.9: {"cosine": matrix}
    root = tmp_path_factory.mktemp("turtle_store")
    classifier = pw.PairXKnnClassifier(
        k=1,
        database_labels=dataset.labels_string,
        pairx=PAIRX,
        query_dataset=dataset,
        database_dataset=dataset,
        extractor=extractor,
        store=ArtifactStore(root),
        progress=False,
        run_name="seaturtle",
    )
    predictions, records = classifier.predict_and_explain(similarity)
    return {
        "dataset": dataset,
        "similarity": similarity["cosine"],
        "predictions": predictions,
        "records": records,
        "root": root,
        "model": lite0_imagenet,
        "before": before,
        "classifier": classifier,
    }


def test_every_query_gets_its_top_k_other_images(turtle_run):
    records = turtle_run["records"]
    ids = list(turtle_run["dataset"].metadata["image_id"])
    assert len(records) == len(ids) * TOP_K
    for query in ids:
        mine = [r for r in records if r.query_id == query]
        assert [r.rank for r in mine] == list(range(TOP_K))
        assert sorted(r.candidate_id for r in mine) == sorted(set(ids) - {query})
        assert all(a.score >= b.score for a, b in zip(mine, mine[1:]))
    assert turtle_run["classifier"].records == records


def test_every_record_has_a_schema_valid_artifact_with_the_pipeline_cosine(turtle_run):
    similarity, root = turtle_run["similarity"], turtle_run["root"]
    schema = json_schemas()["explanation_artifact.schema.json"]
    for record in turtle_run["records"]:
        assert record.explanation_error is None, record.explanation_error
        ref = record.explanation
        document = json.loads((root / ref.json_path).read_text())
        jsonschema.validate(document, schema)
        artifact = ExplanationArtifact.model_validate(document)
        q, d = record.extras["query_index"], record.extras["database_index"]
        assert record.score == pytest.approx(float(similarity[q, d]), abs=1e-7)  # the host's score, unchanged
        assert abs(artifact.cosine - float(similarity[q, d])) <= 1e-4
        assert abs(ref.cosine - float(similarity[q, d])) <= 1e-4
        assert (artifact.query_id, artifact.candidate_id) == (record.query_id, record.candidate_id)
        assert 1 <= len(artifact.matches) <= 20
        assert (root / ref.images["composite"]).is_file()


def test_predictions_are_those_of_plain_knn(turtle_run):
    from wildlife_tools.inference import KnnClassifier

    plain = KnnClassifier(k=1, database_labels=turtle_run["dataset"].labels_string)(turtle_run["similarity"])
    assert list(turtle_run["predictions"]) == list(plain)


def test_model_is_left_exactly_as_it_was(turtle_run):
    model, before = turtle_run["model"], turtle_run["before"]
    after = _model_state(model)
    assert after["training"] == before["training"] and after["requires_grad"] == before["requires_grad"]
    assert all(torch.equal(before["params"][k], v) for k, v in after["params"].items())
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks
    assert all(p.grad is None for p in model.parameters())


def test_review_page_and_table_cover_every_record(turtle_run):
    records = turtle_run["records"]
    page = write_review_page(turtle_run["root"], "seaturtle")
    data = read_page_data(page.read_text())
    assert sum(len(q["records"]) for q in data["queries"]) == len(records)
    assert len(data["queries"]) == 4
    frame = pw.records_to_frame(records)
    assert len(frame) == len(records) and frame["cosine"].notna().all()
    assert list(frame["same_identity"]) == [r.query_label == r.candidate_label for r in records]


def test_one_unreadable_image_costs_only_its_own_records(seaturtle_dir, lite0_imagenet, tmp_path):
    """A broken database row fails its record at stage 'load'; the other keeps its explanation."""
    from wildlife_tools.data import WildlifeDataset

    metadata = pd.read_csv(seaturtle_dir / "metadata.csv")
    query = WildlifeDataset(metadata.iloc[[0]], str(seaturtle_dir), transform=_transform())
    database_rows = metadata.iloc[[1, 2]].copy()
    database_rows.loc[database_rows.index[1], "path"] = "images/identity_b/missing.JPG"
    database = WildlifeDataset(database_rows, str(seaturtle_dir), transform=_transform())
    with torch.no_grad():
        q = lite0_imagenet(query[0][0][None])
        d = lite0_imagenet(database[0][0][None])
    good = float(torch.nn.functional.cosine_similarity(q, d).item())
    similarity = np.array([[good, 0.5]])  # the broken image's score is whatever the host said
    records = pw.explain_similarity(
        similarity,
        query,
        database,
        model=lite0_imagenet,
        config={**PAIRX, "top_k": 2, "k_colors": 1},
        store=ArtifactStore(tmp_path),
        progress=False,
        run_name="broken",
    )
    assert [(r.candidate_id, r.rank, r.score) for r in records] == [("image_2", 0, good), ("image_3", 1, 0.5)]
    assert records[0].explanation is not None and abs(records[0].explanation.cosine - good) <= 1e-4
    assert records[1].explanation is None
    assert records[1].explanation_error.stage == "load"
    assert "missing.JPG" in records[1].explanation_error.message
