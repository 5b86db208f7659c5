"""A synthetic re-identification set with known geometry, generated in code (no downloads).

Every "animal" is an ellipse-shaped body carrying its own random pattern of spots and stripes,
drawn once in a shared *canonical frame* (``CANONICAL_SIZE`` square, body centred). Each sighting
warps that drawing onto a fresh random background with a known homography, then varies lighting
and adds noise; the metadata carries a bounding box around the body (with jitter) so the pipeline
crops with wildlife-tools' ``img_load="bbox"``.

Because the warp of every sighting is kept, the map from one sighting's model input to another's is
known exactly (:meth:`SyntheticSighting.input_from_canonical`), which is what the demo uses to score
where PAIR-X's match lines land.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pairx_plugin.errors import InvalidInputError

CANONICAL_SIZE = 256
SIGHTING_SIZE = 320
_BODY_TONES = ((128, 104, 72), (150, 134, 96), (104, 104, 100), (92, 112, 80), (120, 84, 64))


@dataclass(frozen=True)
class SyntheticSighting:
    """One generated image and the geometry that produced it.

    homography: 3x3 map from canonical-frame pixels to pixels of the saved image.
    bbox: ``[x, y, width, height]`` of the crop the pipeline takes (wildlife-tools ``bbox`` order).
    """

    image_id: str
    identity: str
    path: str  # relative to the data root
    homography: np.ndarray
    bbox: tuple[int, int, int, int]

    def input_from_canonical(self, input_size: tuple[int, int]) -> np.ndarray:
        """3x3 map from canonical pixels to the model-input pixels of this sighting.

        The pipeline crops ``bbox`` and resizes the crop to ``input_size`` (H, W); pixel centres
        follow the usual half-pixel convention of a resize, ``x_in = (x_crop + 0.5) * W / bw - 0.5``.
        """
        height, width = input_size
        bx, by, bw, bh = self.bbox
        crop = np.array([[1.0, 0.0, -bx], [0.0, 1.0, -by], [0.0, 0.0, 1.0]])
        sx, sy = width / bw, height / bh
        resize = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
        return resize @ crop @ self.homography


@dataclass(frozen=True)
class SyntheticSet:
    """The generated images on disk plus their metadata and geometry."""

    root: Path
    metadata: pd.DataFrame  # columns image_id, identity, path, bbox (JSON list)
    sightings: dict[str, SyntheticSighting]

    def query_to_candidate(self, query_id: str, candidate_id: str, input_size: tuple[int, int]) -> np.ndarray:
        """3x3 map from the query's model-input pixels to the candidate's (both at ``input_size``)."""
        to_query = self.sightings[query_id].input_from_canonical(input_size)
        to_candidate = self.sightings[candidate_id].input_from_canonical(input_size)
        return to_candidate @ np.linalg.inv(to_query)


def _random_colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    red, green, blue = (int(v) for v in rng.integers(low, high, size=3))
    return red, green, blue


def _draw_animal(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A canonical drawing (RGB uint8) and its body mask (uint8 0/255) for one new animal."""
    size = CANONICAL_SIZE
    centre = (size // 2, size // 2)
    axes = (int(rng.integers(88, 112)), int(rng.integers(56, 80)))
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 255, -1)

    # natural-looking tones so identity has to come from the pattern, not from the body colour
    base = np.array(_BODY_TONES[int(rng.integers(len(_BODY_TONES)))], float) + rng.uniform(-15, 15, size=3)
    body = np.zeros((size, size, 3), np.uint8)
    body[:] = np.clip(base, 0, 255).astype(np.uint8)

    def marking() -> tuple[int, int, int]:
        factor = rng.uniform(0.25, 0.55) if rng.random() < 0.6 else rng.uniform(1.4, 1.9)
        red, green, blue = (int(v) for v in np.clip(base * factor + rng.uniform(-20, 20, size=3), 0, 255))
        return red, green, blue

    for _ in range(int(rng.integers(2, 5))):  # stripes through the body
        p0 = np.array(centre) + rng.uniform(-60, 60, size=2) * [1.4, 0.8]
        angle = rng.uniform(0, np.pi)
        half = rng.uniform(25, 70)
        d = half * np.array([np.cos(angle), np.sin(angle)])
        cv2.line(
            body,
            tuple(int(v) for v in p0 - d),
            tuple(int(v) for v in p0 + d),
            marking(),
            int(rng.integers(4, 10)),
            cv2.LINE_AA,
        )
    for _ in range(int(rng.integers(16, 30))):  # spots inside the body
        a = rng.uniform(0, 2 * np.pi)
        r = np.sqrt(rng.uniform(0, 1))
        c = (int(centre[0] + 0.9 * r * axes[0] * np.cos(a)), int(centre[1] + 0.9 * r * axes[1] * np.sin(a)))
        cv2.circle(body, c, int(rng.integers(4, 14)), marking(), -1, cv2.LINE_AA)
    cv2.ellipse(body, centre, axes, 0, 0, 360, (20, 20, 20), 3, cv2.LINE_AA)  # outline
    return body, mask


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-frequency coloured noise, different for every sighting (so it cannot identify anyone)."""
    coarse = rng.integers(40, 220, size=(6, 6, 3)).astype(np.uint8)
    smooth = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float64)
    smooth = 0.4 * smooth + 0.6 * smooth.mean(axis=2, keepdims=True)  # muted, like a natural scene
    grain = rng.normal(0, 6, size=(size, size, 3))
    return np.clip(smooth + grain, 0, 255).astype(np.uint8)


def _random_homography(rng: np.random.Generator) -> np.ndarray:
    """Canonical → sighting: rotation, anisotropic scale, shear, mild perspective, translation."""
    c = CANONICAL_SIZE / 2.0
    to_origin = np.array([[1, 0, -c], [0, 1, -c], [0, 0, 1]], float)
    angle = np.deg2rad(rng.uniform(-25, 25))
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    scale = rng.uniform(0.85, 1.15)
    aspect = rng.uniform(0.9, 1.1)
    shear = rng.uniform(-0.12, 0.12)
    affine = np.array([[scale * aspect, shear, 0], [0, scale / aspect, 0], [0, 0, 1]])
    perspective = np.array([[1, 0, 0], [0, 1, 0], rng.uniform(-6e-4, 6e-4, size=3) * [1, 1, 0] + [0, 0, 1]])
    shift = SIGHTING_SIZE / 2.0 + rng.uniform(-18, 18, size=2)
    to_image = np.array([[1, 0, shift[0]], [0, 1, shift[1]], [0, 0, 1]])
    return to_image @ perspective @ affine @ rotation @ to_origin


def _light_and_noise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    size = image.shape[0]
    gain = rng.uniform(0.7, 1.25)
    bias = rng.uniform(-20, 20)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-9
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    gradient = 1.0 + rng.uniform(0.0, 0.35) * (direction[0] * xx + direction[1] * yy)
    tint = rng.uniform(0.92, 1.08, size=3)
    out = image.astype(np.float64) * gain * gradient[..., None] * tint + bias
    out += rng.normal(0, rng.uniform(2, 8), size=out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def _body_bbox(rng: np.random.Generator, mask: np.ndarray, homography: np.ndarray) -> tuple[int, int, int, int]:
    warped = cv2.warpPerspective(mask, homography, (SIGHTING_SIZE, SIGHTING_SIZE), flags=cv2.INTER_NEAREST)
    ys, xs = np.nonzero(warped)
    margin = rng.integers(4, 20, size=4)
    x0 = max(0, int(xs.min()) - int(margin[0]))
    y0 = max(0, int(ys.min()) - int(margin[1]))
    x1 = min(SIGHTING_SIZE, int(xs.max()) + 1 + int(margin[2]))
    y1 = min(SIGHTING_SIZE, int(ys.max()) + 1 + int(margin[3]))
    return x0, y0, x1 - x0, y1 - y0


def generate_synthetic_set(root: str | Path, *, animals: int = 12, sightings: int = 4, seed: int = 0) -> SyntheticSet:
    """Write ``animals * sightings`` PNG images and ``metadata.csv`` under ``root``.

    The same ``seed`` gives the same images, warps and metadata. Identities are ``animal_00`` ...;
    image ids ``animal_00_s0`` .... ``geometry.json`` beside the CSV keeps every homography and bbox.
    """
    if animals < 2:
        raise InvalidInputError(
            f"animals={animals}: the demo needs at least 2 animals to have wrong matches; pass animals >= 2"
        )
    if sightings < 2:
        raise InvalidInputError(
            f"sightings={sightings}: each animal needs at least 2 sightings to be re-identified; pass sightings >= 2"
        )
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    found: dict[str, SyntheticSighting] = {}
    for a in range(animals):
        identity = f"animal_{a:02d}"
        drawing, mask = _draw_animal(rng)
        for s in range(sightings):
            image_id = f"{identity}_s{s}"
            homography = _random_homography(rng)
            background = _background(rng, SIGHTING_SIZE)
            body = cv2.warpPerspective(drawing, homography, (SIGHTING_SIZE, SIGHTING_SIZE), flags=cv2.INTER_LINEAR)
            alpha = cv2.warpPerspective(mask, homography, (SIGHTING_SIZE, SIGHTING_SIZE), flags=cv2.INTER_LINEAR)
            alpha = (alpha.astype(np.float64) / 255.0)[..., None]
            composed = (body * alpha + background * (1 - alpha)).astype(np.uint8)
            image = _light_and_noise(rng, composed)
            bbox = _body_bbox(rng, mask, homography)
            rel_path = f"images/{image_id}.png"
            cv2.imwrite(str(root / rel_path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            found[image_id] = SyntheticSighting(image_id, identity, rel_path, homography, bbox)
            rows.append({"image_id": image_id, "identity": identity, "path": rel_path, "bbox": json.dumps(list(bbox))})
    metadata = pd.DataFrame(rows)
    metadata.to_csv(root / "metadata.csv", index=False)
    geometry = {k: {"homography": v.homography.tolist(), "bbox": list(v.bbox)} for k, v in found.items()}
    (root / "geometry.json").write_text(json.dumps(geometry, indent=1))
    return SyntheticSet(root=root, metadata=metadata, sightings=found)
