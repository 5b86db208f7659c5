"""Building the explained pipeline from a YAML config through wildlife-tools' own ``realize``."""

from __future__ import annotations

import pytest
import torch

import pairx_wildlife_tools  # noqa: F401 - importing registers PairXKnnClassifier in the config store

pytestmark = pytest.mark.slow

CONFIG = """
dataset:
  method: WildlifeDataset
  metadata: {metadata}
  root: {root}
  img_load: full
  transform:
    method: TransformTorchvision
    compose:
      - 'Resize(size=[224, 224])'
      - 'ToTensor()'
      - 'Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])'
classifier:
  method: PairXKnnClassifier
  k: 1
  pairx:
    top_k: 1
    k_colors: 1
    render: [composite]
    output_dir: {out}
"""


def test_realize_builds_dataset_and_explaining_classifier_from_yaml(seaturtle_dir, lite0_imagenet, tmp_path):
    from wildlife_tools.features import DeepFeatures
    from wildlife_tools.inference import KnnClassifier
    from wildlife_tools.similarity import CosineSimilarity
    from wildlife_tools.tools import parse_yaml, realize

    torch.set_num_threads(1)
    config = parse_yaml(
        CONFIG.format(metadata=seaturtle_dir / "metadata.csv", root=seaturtle_dir, out=tmp_path / "out")
    )
    dataset = realize(config["dataset"])
    classifier = realize(config["classifier"], database_labels=dataset.labels_string)
    assert type(classifier).__name__ == "PairXKnnClassifier"
    assert classifier.source_config["pairx"]["k_colors"] == 1  # realize keeps the source config
    assert (classifier.config.top_k, classifier.config.k_colors, classifier.config.render) == (1, 1, ["composite"])

    extractor = DeepFeatures(lite0_imagenet, batch_size=4, num_workers=0)
    features = extractor(dataset)
    similarity = CosineSimilarity()(features, features)["cosine"]
    classifier.bind(query_dataset=dataset, database_dataset=dataset, extractor=extractor)
    predictions = classifier(similarity)

    assert list(predictions) == list(KnnClassifier(k=1, database_labels=dataset.labels_string)(similarity))
    records = classifier.records
    assert len(records) == len(dataset)  # top_k 1: one explained match per query
    for record in records:
        assert record.explanation is not None, record.explanation_error
        q, d = record.extras["query_index"], record.extras["database_index"]
        assert q != d and abs(record.explanation.cosine - float(similarity[q, d])) <= 1e-4
        assert (tmp_path / "out" / record.explanation.images["composite"]).is_file()  # pairx.output_dir used
