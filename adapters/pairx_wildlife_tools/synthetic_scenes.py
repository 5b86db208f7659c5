"""A harder synthetic re-ID set in which the background does not go with the identity.

:mod:`.synthetic` puts every sighting on its own random, featureless background and crops to the
animal, so anything that matches is the animal. Real photos are not like that: the same trees stand
behind different animals photographed at one site, and one animal is photographed at several sites.
This module builds that situation on purpose, with full scenes (no crop):

* a small pool of *scenes* (structured backgrounds: trunks, foliage blobs, rocks, a horizon line),
  each reused behind several individuals, with a small camera jitter per sighting;
* every individual seen in front of several different scenes (sighting ``s`` of animal ``a`` uses
  scene ``(a + s * step) mod scenes``), so the cosine of an ImageNet model is pulled towards
  "same scene" rather than "same animal";
* pose and scale change (rotation, anisotropic scale, shear, mild perspective; the body covers
  roughly half to most of the frame width), and partial occlusion by a branch in front of the body
  in some sightings;
* per sighting the visible-body mask (``masks/<id>.png`` and as COCO RLE in the ``segmentation``
  column, as wildlife-tools datasets carry it), its bounding box (``bbox`` column) and
  the canonical → image homography (``geometry.json``), so ground-truth correspondences between any
  two sightings of the set are known (:meth:`SceneSet.query_to_candidate`).

The animals themselves come from :func:`.synthetic._draw_animal` (same canonical frame), so the
line-landing score of :mod:`.correspondence` applies unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pairx_plugin.errors import InvalidInputError

from .synthetic import CANONICAL_SIZE, _draw_animal, _light_and_noise

SCENE_SIZE = 256
#: sighting ``s`` of animal ``a`` stands in front of scene ``(a + s * SCENE_STEP) % scenes``
SCENE_STEP = 1
#: range of the body's scale in the scene, relative to the canonical drawing (0.7: the body spans about half the width)
BODY_SCALE = (0.7, 1.0)


@dataclass(frozen=True)
class SceneSighting:
    """One full-scene image: the animal's canonical → image homography, its visible mask and bbox."""

    image_id: str
    identity: str
    scene: int
    path: str  # relative to the data root
    mask_path: str  # relative to the data root; uint8 0/255, visible body only
    homography: np.ndarray
    bbox: tuple[int, int, int, int]  # [x, y, width, height] of the visible body
    occluded: bool
    image_size: tuple[int, int] = (SCENE_SIZE, SCENE_SIZE)  # (H, W)

    def input_from_canonical(self, input_size: tuple[int, int]) -> np.ndarray:
        """3x3 map from canonical pixels to model-input pixels when the whole image is resized."""
        height, width = input_size
        sy, sx = height / self.image_size[0], width / self.image_size[1]
        resize = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
        return resize @ self.homography


@dataclass(frozen=True)
class SceneSet:
    """The generated scenes on disk, their metadata (wildlife-tools columns) and geometry."""

    root: Path
    metadata: (
        pd.DataFrame
    )  # image_id, identity, path, bbox (JSON), segmentation (COCO RLE JSON), mask_path, scene, occluded
    sightings: dict[str, SceneSighting]

    def query_to_candidate(self, query_id: str, candidate_id: str, input_size: tuple[int, int]) -> np.ndarray:
        """3x3 map from the query's model-input pixels to the candidate's (both at ``input_size``)."""
        to_query = self.sightings[query_id].input_from_canonical(input_size)
        to_candidate = self.sightings[candidate_id].input_from_canonical(input_size)
        return to_candidate @ np.linalg.inv(to_query)

    def mask(self, image_id: str) -> np.ndarray:
        """The visible-body mask of one sighting, (H, W) bool at the saved image's size."""
        path = self.root / self.sightings[image_id].mask_path
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise InvalidInputError(f"cannot read mask {str(path)!r}; regenerate the scene set")
        return mask > 127


def _scene(rng: np.random.Generator, size: int) -> np.ndarray:
    """A structured outdoor-like scene: sky/ground split, trunks, foliage blobs, rocks, grass grain."""
    horizon = int(rng.integers(size // 4, size // 2))
    sky = np.array(rng.integers(150, 230, size=3), float)
    ground = np.array(rng.integers(60, 150, size=3), float) * [0.8, 1.0, 0.6]
    image = np.zeros((size, size, 3), float)
    image[:horizon] = sky
    image[horizon:] = ground
    image = image.astype(np.uint8)
    for _ in range(int(rng.integers(3, 7))):  # trunks with crowns
        x = int(rng.integers(0, size))
        width = int(rng.integers(6, 18))
        top = int(rng.integers(0, horizon))
        trunk = tuple(int(v) for v in rng.integers(30, 90, size=3))
        cv2.rectangle(image, (x, top), (x + width, size), trunk, -1)
        crown = tuple(int(v) for v in np.array(rng.integers(20, 120, size=3)) * [0.6, 1.0, 0.5])
        for _ in range(int(rng.integers(2, 5))):
            centre = (x + int(rng.integers(-25, 25)), top + int(rng.integers(-10, 20)))
            cv2.circle(image, centre, int(rng.integers(12, 30)), crown, -1, cv2.LINE_AA)
    for _ in range(int(rng.integers(3, 8))):  # rocks and bushes on the ground
        centre = (int(rng.integers(0, size)), int(rng.integers(horizon, size)))
        axes = (int(rng.integers(8, 26)), int(rng.integers(5, 16)))
        colour = tuple(int(v) for v in rng.integers(50, 200, size=3))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
    grain = cv2.GaussianBlur(rng.normal(0, 14, size=(size, size, 3)), (0, 0), 1.2)
    return np.clip(image + grain, 0, 255).astype(np.uint8)


def _camera_jitter(rng: np.random.Generator, scene: np.ndarray) -> np.ndarray:
    """The same scene from a slightly different camera position (shift and zoom)."""
    size = scene.shape[0]
    zoom = rng.uniform(1.0, 1.12)
    shift = rng.uniform(-10, 10, size=2)
    matrix = np.array([[zoom, 0, (1 - zoom) * size / 2 + shift[0]], [0, zoom, (1 - zoom) * size / 2 + shift[1]]])
    return cv2.warpAffine(scene, matrix, (size, size), borderMode=cv2.BORDER_REFLECT)


def _animal_homography(rng: np.random.Generator, size: int, body_scale: tuple[float, float]) -> np.ndarray:
    """Canonical → scene: rotation, scale (body a fifth to a half of the frame), shear, perspective."""
    c = CANONICAL_SIZE / 2.0
    to_origin = np.array([[1, 0, -c], [0, 1, -c], [0, 0, 1]], float)
    angle = np.deg2rad(rng.uniform(-30, 30))
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    scale = rng.uniform(*body_scale) * size / CANONICAL_SIZE
    aspect = rng.uniform(0.85, 1.15)
    shear = rng.uniform(-0.15, 0.15)
    affine = np.array([[scale * aspect, shear * scale, 0], [0, scale / aspect, 0], [0, 0, 1]])
    perspective = np.array([[1, 0, 0], [0, 1, 0], [*rng.uniform(-8e-4, 8e-4, size=2) / scale, 1.0]])
    centre = size / 2.0 + rng.uniform(-0.18, 0.18, size=2) * size
    to_image = np.array([[1, 0, centre[0]], [0, 1, centre[1]], [0, 0, 1]])
    return to_image @ perspective @ affine @ rotation @ to_origin


def _occluder(rng: np.random.Generator, size: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """A branch-like band across part of the body (uint8 0/255 mask)."""
    x, y, w, h = box
    mask = np.zeros((size, size), np.uint8)
    centre = np.array([x + rng.uniform(0.2, 0.8) * w, y + rng.uniform(0.2, 0.8) * h])
    angle = rng.uniform(0, np.pi)
    half = max(w, h)
    d = half * np.array([np.cos(angle), np.sin(angle)])
    thickness = int(max(6, rng.uniform(0.15, 0.3) * min(w, h)))
    cv2.line(mask, tuple(int(v) for v in centre - d), tuple(int(v) for v in centre + d), 255, thickness)
    return mask


def _coco_rle(mask: np.ndarray) -> str:
    """The mask as COCO RLE JSON (what wildlife-tools' ``segmentation`` column holds), counts as text."""
    import pycocotools.mask as mask_coco

    rle = mask_coco.encode(np.asfortranarray(mask.astype(np.uint8)))
    return json.dumps({"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")})


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def generate_scene_set(
    root: str | Path,
    *,
    animals: int = 12,
    sightings: int = 4,
    scenes: int = 6,
    occlusion: float = 0.35,
    body_scale: tuple[float, float] = BODY_SCALE,
    seed: int = 0,
) -> SceneSet:
    """Write ``animals * sightings`` full-scene PNGs, their masks and ``metadata.csv`` under ``root``.

    scenes: size of the background pool (each scene is reused behind about
    ``animals * sightings / scenes`` sightings of different animals); occlusion: chance that a
    sighting has a branch in front of the body; body_scale: range of the body's size relative to the
    canonical drawing (larger bodies leave less background). The same arguments give the same files.
    """
    if animals < 2:
        raise InvalidInputError(f"animals={animals}: a re-ID set needs at least 2 animals; pass animals >= 2")
    if sightings < 2:
        raise InvalidInputError(f"sightings={sightings}: each animal needs at least 2 sightings; pass sightings >= 2")
    if scenes < 2:
        raise InvalidInputError(f"scenes={scenes}: the background must vary between sightings; pass scenes >= 2")
    if not 0.0 <= occlusion <= 1.0:
        raise InvalidInputError(f"occlusion={occlusion!r} is a probability; pass a value in [0, 1]")
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pool = [_scene(rng, SCENE_SIZE) for _ in range(scenes)]
    rows: list[dict] = []
    found: dict[str, SceneSighting] = {}
    size = SCENE_SIZE
    for a in range(animals):
        identity = f"animal_{a:02d}"
        drawing, body_mask = _draw_animal(rng)
        for s in range(sightings):
            image_id = f"{identity}_s{s}"
            scene_index = (a + s * SCENE_STEP) % scenes
            background = _camera_jitter(rng, pool[scene_index])
            homography = _animal_homography(rng, size, body_scale)
            body = cv2.warpPerspective(drawing, homography, (size, size), flags=cv2.INTER_LINEAR)
            alpha = cv2.warpPerspective(body_mask, homography, (size, size), flags=cv2.INTER_LINEAR)
            composed = body * (alpha[..., None] / 255.0) + background * (1 - alpha[..., None] / 255.0)
            visible = alpha > 127
            occluded = bool(rng.random() < occlusion)
            if occluded:
                branch = _occluder(rng, size, _bbox(visible))
                colour = np.array(rng.integers(30, 90, size=3), float)
                composed = np.where(branch[..., None] > 0, colour, composed)
                visible &= branch == 0
            image = _light_and_noise(rng, composed.astype(np.uint8))
            rel_path, rel_mask = f"images/{image_id}.png", f"masks/{image_id}.png"
            cv2.imwrite(str(root / rel_path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(root / rel_mask), visible.astype(np.uint8) * 255)
            bbox = _bbox(visible)
            found[image_id] = SceneSighting(
                image_id, identity, scene_index, rel_path, rel_mask, homography, bbox, occluded
            )
            rows.append(
                {
                    "image_id": image_id,
                    "identity": identity,
                    "path": rel_path,
                    "bbox": json.dumps(list(bbox)),
                    "segmentation": _coco_rle(visible),
                    "mask_path": rel_mask,
                    "scene": scene_index,
                    "occluded": occluded,
                }
            )
    metadata = pd.DataFrame(rows)
    metadata.to_csv(root / "metadata.csv", index=False)
    geometry = {
        k: {"homography": v.homography.tolist(), "bbox": list(v.bbox), "scene": v.scene} for k, v in found.items()
    }
    (root / "geometry.json").write_text(json.dumps(geometry, indent=1))
    return SceneSet(root=root, metadata=metadata, sightings=found)


__all__ = ["SCENE_SIZE", "SceneSet", "SceneSighting", "generate_scene_set"]
