"""The wildlife-tools 1.x API (GitHub only), through small stand-ins that follow its documented
signatures: ``ImageDataset(metadata, root, transform, col_path, col_label, load_label)`` (no
``img_load``), ``DeepFeatures`` returning a ``FeatureDataset``, ``CosineSimilarity`` returning the
matrix, ``KnnClassifier(database_labels, k, return_scores)`` and ``TopkClassifier(database_labels, k,
return_all)`` returning ``(labels, scores, database_indices)``. The model and engine are real.
These run in the main (0.0.9) environment; the real 1.x package is tested by test_wildlife_v1_real.py
(tests/run_wildlife_v1.sh).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image

import pairx_wildlife_tools as pw
from pairx_plugin.artifacts.store import ArtifactStore
from pairx_plugin.pretrained import IMAGENET_MEAN, IMAGENET_STD

pytestmark = pytest.mark.slow
PAIRX = {"top_k": 1, "k_colors": 1, "render": ["composite"]}


class ImageDataset:
    """1.x ``wildlife_tools.data.ImageDataset`` shape: no img_load; transform applied to the file."""

    def __init__(self, metadata, root=None, transform=None, col_path="path", col_label="identity", load_label=True):
        self.metadata = metadata.reset_index(drop=True)
        self.root, self.transform = root, transform
        self.col_path, self.col_label, self.load_label = col_path, col_label, load_label
        self.labels, self.labels_map = pd.factorize(self.metadata[col_label].values)

    @property
    def labels_string(self):
        return self.metadata[self.col_label].astype(str).values

    def __len__(self):
        return len(self.metadata)

    def get_image(self, path):
        return Image.open(path).convert("RGB")

    def __getitem__(self, idx):
        row = self.metadata.iloc[idx]
        path = os.path.join(self.root, row[self.col_path]) if self.root else row[self.col_path]
        image = self.get_image(path)
        if self.transform:
            image = self.transform(image)
        return (image, self.labels[idx]) if self.load_label else image


class FeatureDataset:
    def __init__(self, features, metadata, col_label="identity", load_label=True):
        self.features, self.metadata, self.col_label = features, metadata.reset_index(drop=True), col_label

    def __len__(self):
        return len(self.metadata)


class DeepFeatures:
    def __init__(self, model, batch_size=128, num_workers=1, device="cpu"):
        self.model, self.batch_size, self.num_workers, self.device = model, batch_size, num_workers, device

    def __call__(self, dataset):
        with torch.no_grad():
            batch = torch.stack([dataset[i][0] for i in range(len(dataset))])
            return FeatureDataset(self.model.eval()(batch).numpy(), dataset.metadata, dataset.col_label)


class CosineSimilarity:
    def __call__(self, query, database):
        a, b = torch.tensor(query.features), torch.tensor(database.features)
        return (F.normalize(a) @ F.normalize(b).T).numpy()  # 1.x: the matrix itself


class KnnClassifier:
    def __init__(self, database_labels, k=1, return_scores=False):
        self.database_labels, self.k, self.return_scores = np.asarray(database_labels), k, return_scores

    def __call__(self, similarity):
        order = np.argsort(-similarity, axis=1)[:, : self.k]
        preds = self.database_labels[order[:, 0]]
        scores = np.take_along_axis(similarity, order[:, :1], axis=1)[:, 0]
        return (preds, scores) if self.return_scores else preds


class TopkClassifier:
    """Top k distinct labels per query, each with its best score and database index."""

    def __init__(self, database_labels, k=10, return_all=False):
        self.database_labels, self.k, self.return_all = np.asarray(database_labels), k, return_all

    def __call__(self, similarity):
        preds, scores, index = [], [], []
        for row in similarity:
            seen, p, s, i = set(), [], [], []
            for j in np.argsort(-row, kind="stable"):
                if self.database_labels[j] not in seen:
                    seen.add(self.database_labels[j])
                    p.append(self.database_labels[j]), s.append(row[j]), i.append(j)
            preds.append(p[: self.k]), scores.append(s[: self.k]), index.append(i[: self.k])
        result = np.array(preds), np.array(scores), np.array(index)
        return result if self.return_all else result[0]


@pytest.fixture(scope="module")
def v1_pipeline(seaturtle_dir, lite0_imagenet, tmp_path_factory):
    torch.set_num_threads(1)
    metadata = pd.read_csv(seaturtle_dir / "metadata.csv")
    transform = T.Compose([T.Resize((224, 224)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    query = ImageDataset(metadata[metadata.split == "test"], str(seaturtle_dir), transform=transform)
    database = ImageDataset(metadata[metadata.split == "train"], str(seaturtle_dir), transform=transform)
    extractor = DeepFeatures(lite0_imagenet)
    similarity = CosineSimilarity()(extractor(query), extractor(database))
    store = ArtifactStore(tmp_path_factory.mktemp("v1_store"))
    records = pw.explain_similarity(
        similarity, query, database, extractor, PAIRX, store=store, progress=False, run_name="v1-matrix"
    )
    return {
        "query": query,
        "database": database,
        "extractor": extractor,
        "similarity": similarity,
        "store": store,
        "records": records,
    }


def test_explain_similarity_takes_the_1x_matrix(v1_pipeline):
    p = v1_pipeline
    assert isinstance(p["similarity"], np.ndarray) and p["similarity"].shape == (2, 2)
    records = p["records"]
    assert [r.query_id for r in records] == ["image_2", "image_4"]
    for record in records:
        q, d = record.extras["query_index"], record.extras["database_index"]
        assert record.candidate_id == p["database"].metadata.image_id[d]
        assert abs(record.explanation.cosine - p["similarity"][q, d]) <= 1e-4


def test_topk_classifier_output_becomes_ranked_records(v1_pipeline):
    p = v1_pipeline
    labels, scores, index = TopkClassifier(p["database"].labels_string, k=2, return_all=True)(p["similarity"])
    rows = pw.from_topk_classifier((labels, scores, index))
    records = pw.explain_candidates(
        rows,
        p["query"],
        p["database"],
        model=p["extractor"].model,
        config=PAIRX,
        store=p["store"],
        progress=False,
        run_name="v1-topk",
    )
    assert len(records) == 4 and [r.rank for r in records] == [0, 1, 0, 1]
    for record, label in zip(records, labels.reshape(-1)):
        assert record.candidate_label == label
    explained = [r for r in records if r.rank == 0]
    assert all(r.explanation is not None for r in explained)
    assert all(r.explanation is None and r.explanation_error is None for r in records if r.rank == 1)  # top_k 1
    for record in explained:
        q, d = record.extras["query_index"], record.extras["database_index"]
        assert abs(record.explanation.cosine - p["similarity"][q, d]) <= 1e-4


def test_wrapper_keeps_1x_return_scores_tuple(v1_pipeline):
    p = v1_pipeline
    plain = KnnClassifier(p["database"].labels_string, k=1, return_scores=True)
    wrapped = pw.PairXKnnClassifier(
        classifier=KnnClassifier(p["database"].labels_string, k=1, return_scores=True),
        pairx=PAIRX,
        query_dataset=p["query"],
        database_dataset=p["database"],
        extractor=p["extractor"],
        store=p["store"],
        progress=False,
    )
    result = wrapped(p["similarity"])
    expected = plain(p["similarity"])
    assert isinstance(result, tuple) and len(result) == 2
    assert list(result[0]) == list(expected[0]) and np.allclose(result[1], expected[1])
    assert len(wrapped.records) == 2 and all(r.explanation is not None for r in wrapped.records)
    # the fixture explained the same pairs into this store: the store answers from its cache
    assert all(r.explanation.cache_hit for r in wrapped.records)
