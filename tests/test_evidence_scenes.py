"""The scene set (identity decorrelated from background) and the wildlife-tools foreground rows."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest

from pairx_plugin.errors import InvalidInputError
from pairx_wildlife_tools.foreground import row_foreground
from pairx_wildlife_tools.synthetic_scenes import generate_scene_set


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return generate_scene_set(tmp_path_factory.mktemp("scenes"), animals=4, sightings=3, scenes=3, seed=5)


def test_backgrounds_are_shared_across_identities_and_vary_within_one(scenes):
    table = scenes.metadata
    assert len(table) == 12
    for _, rows in table.groupby("scene"):
        assert rows["identity"].nunique() > 1  # the same scene behind different animals
    for _, rows in table.groupby("identity"):
        assert rows["scene"].nunique() > 1  # the same animal in front of different scenes
    assert table["occluded"].any()


def test_masks_boxes_and_segmentation_agree(scenes):
    import pycocotools.mask as mask_coco

    for row in scenes.metadata.itertuples():
        mask = scenes.mask(row.image_id)
        x, y, w, h = json.loads(row.bbox)
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) == (x, y, w, h)
        decoded = mask_coco.decode(json.loads(row.segmentation)).astype(bool)
        assert np.array_equal(decoded, mask)


def test_ground_truth_maps_the_body_onto_the_body(scenes):
    ids = [i for i in scenes.sightings if scenes.sightings[i].identity == "animal_01"]
    mapping = scenes.query_to_candidate(ids[0], ids[1], (224, 224))
    query_mask = scenes.mask(ids[0])
    candidate_mask = scenes.mask(ids[1])
    ys, xs = np.nonzero(query_mask[::8, ::8])
    points = np.stack([xs * 8 * 224 / 256, ys * 8 * 224 / 256, np.ones(len(xs))], axis=1)
    mapped = points @ mapping.T
    mapped = mapped[:, :2] / mapped[:, 2:]
    inside = [
        0 <= u < 224 and 0 <= v < 224 and candidate_mask[int(v * 256 / 224), int(u * 256 / 224)] for u, v in mapped
    ]
    assert np.mean(inside) > 0.6  # the rest: occluded in the candidate, or rounding at the outline


def test_same_seed_same_files(tmp_path):
    a = generate_scene_set(tmp_path / "a", animals=2, sightings=2, scenes=2, seed=1)
    b = generate_scene_set(tmp_path / "b", animals=2, sightings=2, scenes=2, seed=1)
    assert (a.root / "images/animal_00_s1.png").read_bytes() == (b.root / "images/animal_00_s1.png").read_bytes()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"animals": 1}, "animals=1"),
        ({"sightings": 1}, "sightings=1"),
        ({"scenes": 1}, "scenes=1"),
        ({"occlusion": 2.0}, "occlusion=2.0"),
    ],
)
def test_bad_scene_arguments_are_named(tmp_path, kwargs, fragment):
    with pytest.raises(InvalidInputError, match=fragment):
        generate_scene_set(tmp_path, **kwargs)


class Rows:
    def __init__(self, rows: list[dict], img_load: str) -> None:
        self.metadata = pd.DataFrame(rows)
        self.img_load = img_load


def test_row_foreground_from_box_segmentation_and_crop_modes(scenes):
    row = scenes.metadata.iloc[0].to_dict()
    mask = scenes.mask(row["image_id"])
    full = row_foreground(Rows([row], "full"), 0, mask.shape)
    assert np.array_equal(full, mask)  # segmentation wins over the box
    boxed = row_foreground(Rows([{k: v for k, v in row.items() if k != "segmentation"}], "full"), 0, mask.shape)
    x, y, w, h = json.loads(row["bbox"])
    assert boxed.sum() == w * h and boxed[y, x] and boxed[y + h - 1, x + w - 1]
    crop = row_foreground(Rows([row], "bbox"), 0, (h, w))
    assert crop.shape == (h, w) and np.array_equal(crop, mask[y : y + h, x : x + w])
    assert row_foreground(Rows([{k: v for k, v in row.items() if k != "segmentation"}], "bbox"), 0, (h, w)).all()
    assert row_foreground(Rows([row], "crop_black"), 0, mask.shape) is None
    assert row_foreground(Rows([{"image_id": "x", "path": "p"}], "full"), 0, (10, 10)) is None


def test_dataset_image_source_passes_the_animal_mask_through_the_transform(scenes):
    from torchvision import transforms as T
    from wildlife_tools.data import WildlifeDataset

    from pairx_wildlife_tools.images import DatasetImageSource

    transform = T.Compose([T.Resize((112, 112)), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    dataset = WildlifeDataset(scenes.metadata, str(scenes.root), transform=transform, img_load="full")
    image = DatasetImageSource([dataset]).load(scenes.metadata.iloc[2]["image_id"])
    assert image.foreground.shape == image.display.shape[:2] == (112, 112)
    mask = scenes.mask(scenes.metadata.iloc[2]["image_id"]).astype(np.float32)
    expected = cv2.resize(mask, (112, 112), interpolation=cv2.INTER_AREA) > 0.5
    assert np.mean(image.foreground == expected) > 0.98
    plain = WildlifeDataset(
        scenes.metadata.drop(columns=["segmentation", "bbox"]), str(scenes.root), transform=transform, img_load="full"
    )
    assert DatasetImageSource([plain]).load(scenes.metadata.iloc[2]["image_id"]).foreground is None
