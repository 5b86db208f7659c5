"""The real wildlife-tools 1.x (1.0.3 wheel from ../shared/wheels) end to end on the sea-turtle sample.

Runs only where 1.x is installed: ``tests/run_wildlife_v1.sh`` builds that environment (a PYTHONPATH
overlay over the main venv) and runs this file; in the main environment (0.0.9) it is skipped.

Covered: ``wildlife_tools.data.ImageDataset`` and wildlife-datasets' ``WildlifeDataset`` →
``DeepFeatures`` → ``CosineSimilarity`` → ``TopkClassifier(return_all=True)`` → the hook, through
``PairXTopkClassifier``; ``KnnClassifier`` through ``PairXKnnClassifier``; ``SimilarityPipeline`` and
``WildFusion`` (fused scores, deep part explained); ``pairx-plugin run`` / ``demo`` registration.
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
from pairx_plugin.artifacts.schema import ExplanationArtifact, json_schemas
from pairx_plugin.artifacts.store import ArtifactStore
from pairx_plugin.pretrained import IMAGENET_MEAN, IMAGENET_STD
from pairx_wildlife_tools import host

IS_V1 = host.api_generation() == "1.x"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not IS_V1, reason="needs wildlife-tools 1.x (tests/run_wildlife_v1.sh installs it)"),
]
PAIRX = {"top_k": 2, "k_lines": 10, "k_colors": 1, "render": ["composite"]}


def _transform(size: int = 224):
    return T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _split(seaturtle_dir):
    metadata = pd.read_csv(seaturtle_dir / "metadata.csv")
    return metadata[metadata["split"] == "test"], metadata[metadata["split"] == "train"]


def _image_datasets(seaturtle_dir, transform):
    from wildlife_tools.data import ImageDataset

    query, database = _split(seaturtle_dir)
    return (
        ImageDataset(query, str(seaturtle_dir), transform=transform),
        ImageDataset(database, str(seaturtle_dir), transform=transform),
    )


def _wildlife_datasets(seaturtle_dir, transform):
    from wildlife_datasets.datasets import WildlifeDataset

    query, database = _split(seaturtle_dir)
    return (
        WildlifeDataset(str(seaturtle_dir), query.reset_index(drop=True), transform=transform, load_label=True),
        WildlifeDataset(str(seaturtle_dir), database.reset_index(drop=True), transform=transform, load_label=True),
    )


def _assert_schema_valid_with_cosine(records, root, expected):
    """Every record explained, its artifact schema-valid, explained cosine == ``expected[q, d]`` within 1e-4."""
    schema = json_schemas()["explanation_artifact.schema.json"]
    assert records
    for record in records:
        assert record.explanation_error is None, record.explanation_error
        document = json.loads((root / record.explanation.json_path).read_text())
        jsonschema.validate(document, schema)
        artifact = ExplanationArtifact.model_validate(document)
        q, d = record.extras["query_index"], record.extras["database_index"]
        assert abs(artifact.cosine - float(expected[q, d])) <= 1e-4, (record.query_id, record.candidate_id)
        assert (artifact.query_id, artifact.candidate_id) == (record.query_id, record.candidate_id)


@pytest.mark.parametrize(
    "make_datasets", [_image_datasets, _wildlife_datasets], ids=["ImageDataset", "wildlife-datasets"]
)
def test_topk_pipeline_end_to_end(make_datasets, seaturtle_dir, lite0_imagenet, tmp_path):
    from wildlife_tools.features import DeepFeatures
    from wildlife_tools.inference import TopkClassifier
    from wildlife_tools.similarity import CosineSimilarity

    torch.set_num_threads(1)
    query, database = make_datasets(seaturtle_dir, _transform())
    extractor = DeepFeatures(lite0_imagenet, batch_size=4, num_workers=0, device="cpu")
    similarity = CosineSimilarity()(extractor(query), extractor(database))
    assert isinstance(similarity, np.ndarray) and similarity.shape == (2, 2)  # 1.x: the bare matrix
    labels = np.asarray(database.labels_string)  # pandas 3: an Arrow array TopkClassifier cannot index
    plain = TopkClassifier(labels, k=2, return_all=True)(similarity)

    classifier = pw.PairXTopkClassifier(
        labels,
        k=2,
        return_all=True,
        pairx=PAIRX,
        query_dataset=query,
        database_dataset=database,
        extractor=extractor,
        store=ArtifactStore(tmp_path),
        progress=False,
        run_name="topk",
    )
    output = classifier(similarity)
    for mine, theirs in zip(output, plain, strict=True):  # exactly what TopkClassifier returns
        assert np.array_equal(mine, theirs)
    records = classifier.records
    assert [(r.query_id, r.rank) for r in records] == [("image_2", 0), ("image_2", 1), ("image_4", 0), ("image_4", 1)]
    for record in records:
        q, rank = record.extras["query_index"], record.rank
        assert record.score == pytest.approx(float(plain[1][q, rank]), abs=1e-7)  # the host's score, unchanged
        assert record.candidate_label == plain[0][q, rank]
    _assert_schema_valid_with_cosine(records, tmp_path, similarity)
    assert (tmp_path / "runs" / "topk.jsonl").is_file()
    # without return_all it gives the labels only, like TopkClassifier
    labels_only = pw.PairXTopkClassifier(labels, k=2, pairx={"enabled": False})(similarity)
    assert np.array_equal(labels_only, plain[0])


def test_knn_classifier_wrapper_on_1x(seaturtle_dir, lite0_imagenet, tmp_path):
    from wildlife_tools.features import DeepFeatures
    from wildlife_tools.inference import KnnClassifier
    from wildlife_tools.similarity import CosineSimilarity

    torch.set_num_threads(1)
    query, database = _image_datasets(seaturtle_dir, _transform())
    extractor = DeepFeatures(lite0_imagenet, batch_size=4, num_workers=0, device="cpu")
    similarity = CosineSimilarity()(extractor(query), extractor(database))
    labels = np.asarray(database.labels_string)
    classifier = pw.PairXKnnClassifier(
        k=1,
        database_labels=labels,
        return_scores=True,
        pairx=PAIRX,
        query_dataset=query,
        database_dataset=database,
        extractor=extractor,
        store=ArtifactStore(tmp_path),
        progress=False,
    )
    predictions, scores = classifier(similarity)
    expected_predictions, expected_scores = KnnClassifier(labels, k=1, return_scores=True)(similarity)
    assert np.array_equal(predictions, expected_predictions) and np.array_equal(scores, expected_scores)
    assert len(classifier.records) == 4
    _assert_schema_valid_with_cosine(classifier.records, tmp_path, similarity)


def test_similarity_pipeline_and_wildfusion_explain_the_deep_part(seaturtle_dir, lite0_imagenet, tmp_path):
    from wildlife_tools.features import DeepFeatures
    from wildlife_tools.similarity import CosineSimilarity, SimilarityPipeline, WildFusion
    from wildlife_tools.similarity.calibration import LogisticCalibration

    torch.set_num_threads(1)
    deep = SimilarityPipeline(
        matcher=CosineSimilarity(),
        transform=_transform(224),
        extractor=DeepFeatures(lite0_imagenet, batch_size=4, num_workers=0),
        calibration=LogisticCalibration(),
    )
    other = SimilarityPipeline(
        matcher=CosineSimilarity(),
        transform=_transform(160),
        extractor=DeepFeatures(lite0_imagenet, batch_size=4, num_workers=0),
        calibration=LogisticCalibration(),
    )
    query, database = _image_datasets(seaturtle_dir, None)
    full = _image_datasets(seaturtle_dir, None)
    fusion = WildFusion(calibrated_pipelines=[deep, other])
    fusion.fit_calibration(full[0], full[1])
    fused = fusion(query, database)
    assert query.transform is other.transform  # SimilarityPipeline re-assigns the datasets' transform

    # the deep pipeline's own cosine, on fresh datasets with its transform
    q224, d224 = _image_datasets(seaturtle_dir, _transform(224))
    cosine = CosineSimilarity()(deep.extractor(q224), deep.extractor(d224))
    assert not np.allclose(fused, cosine, atol=1e-3)  # the fused score is a different quantity

    records = pw.explain_similarity(
        fused, query, database, config=PAIRX, pipeline=fusion, store=ArtifactStore(tmp_path / "fused"), progress=False
    )
    assert len(records) == 4
    assert all(
        r.extras["score_kind"] == "fused" and "fused (WildFusion)" in r.extras["explained_score"] for r in records
    )
    _assert_schema_valid_with_cosine(records, tmp_path / "fused", cosine)
    assert query.transform is other.transform  # the user's datasets are not touched

    uncalibrated = SimilarityPipeline(
        matcher=CosineSimilarity(),
        transform=_transform(224),
        extractor=DeepFeatures(lite0_imagenet, batch_size=4, num_workers=0),
    )
    plain = uncalibrated(query, database)
    records = pw.explain_similarity(
        plain,
        query,
        database,
        config=PAIRX,
        pipeline=uncalibrated,
        store=ArtifactStore(tmp_path / "plain"),
        progress=False,
    )
    assert {r.extras["score_kind"] for r in records} == {"cosine"}
    _assert_schema_valid_with_cosine(records, tmp_path / "plain", plain)


def test_wildfusion_without_a_deep_pipeline_is_refused(seaturtle_dir):
    from wildlife_tools.similarity import SimilarityPipeline, WildFusion

    from pairx_plugin.errors import InvalidInputError

    fusion = WildFusion(calibrated_pipelines=[SimilarityPipeline(matcher=lambda a, b, **_: None)])
    query, database = _image_datasets(seaturtle_dir, _transform())
    with pytest.raises(InvalidInputError, match="no pipeline with a DeepFeatures extractor"):
        pw.explain_similarity(np.zeros((2, 2)), query, database, config=PAIRX, pipeline=fusion)


def test_cli_run_and_demo_are_registered_and_run_works_on_1x(seaturtle_dir, tmp_path, capfd):
    from pairx_plugin import cli

    torch.set_num_threads(1)
    parser = cli.build_parser()
    printed = capfd.readouterr()
    assert "skipped" not in printed.err, printed.err  # run and demo import on 1.x
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    assert {"run", "demo"} <= set(commands)

    config = tmp_path / "pipeline.yaml"
    config.write_text("model: builtin\nbatch_size: 4\npairx:\n  top_k: 1\n  k_colors: 1\n  render: [composite]\n")
    code = cli.main(
        [
            "run",
            "--images",
            str(seaturtle_dir),
            "--metadata",
            str(seaturtle_dir / "metadata.csv"),
            "--config",
            str(config),
            "--out",
            str(tmp_path / "out"),
            "--run-name",
            "v1",
            "--no-progress",
        ]
    )
    printed = capfd.readouterr()
    assert code == 0, printed
    assert "it/s" not in printed.err and "%|" not in printed.err, printed.err  # no feature-extraction bar
    lines = [json.loads(line) for line in (tmp_path / "out" / "runs" / "v1.jsonl").read_text().splitlines()]
    assert sorted(e["record"]["query_id"] for e in lines) == ["image_2", "image_4"]
    assert all(e["record"]["explanation"] is not None for e in lines)
