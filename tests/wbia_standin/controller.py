"""Stand-in for the WBIA controller (``ibs``) over the real sea-turtle sample images.

Getters follow ``accessor_decors.getter_1to1``: a scalar in gives a scalar out, a list in gives a
list out. ``get_annot_chips`` returns BGR uint8 chips (longest side 700, aspect kept, bbox cropped
and ``theta`` removed by an affine Lanczos warp of the EXIF-oriented image), like
``core_annots.compute_chip`` with the default ``ChipConfig``.
"""

from __future__ import annotations

import functools
import math
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from . import controller_inject
from .constants import UNKNOWN, UNKNOWN_NAME_ROWID
from .dtool import DependencyCache

CHIP_DIM_SIZE = 700


def getter_1to1(func):
    @functools.wraps(func)
    def wrapper(self, ids, *args, **kwargs):
        if isinstance(ids, (list, tuple, np.ndarray)):
            return [func(self, int(i) if isinstance(i, (int, np.integer)) else i, *args, **kwargs) for i in ids]
        return func(self, ids, *args, **kwargs)

    return wrapper


@dataclass
class Annot:
    aid: int
    gid: int
    bbox: tuple[int, int, int, int]
    theta: float | None
    name: str  # UNKNOWN for no name
    species: str
    viewpoint: str
    uuid: uuid.UUID


def default_annotations(seaturtle_dir: Path):
    """Five annotations on the four sample images; aid 4 has no name, aid 3 is rotated."""
    images = {
        1: seaturtle_dir / "images/identity_a/image_1.JPG",
        2: seaturtle_dir / "images/identity_a/image_2.JPG",
        3: seaturtle_dir / "images/identity_b/image_3.JPG",
        4: seaturtle_dir / "images/identity_b/image_4.JPG",
    }
    rows = [
        (1, 1, (30, 50, 450, 540), 0.0, "a", "sea_turtle", "left"),
        (2, 2, (20, 40, 470, 560), None, "a", "turtle_green", "left"),
        (3, 3, (40, 30, 520, 460), 0.15, "b", "sea_turtle", "right"),
        (4, 4, (50, 20, 540, 470), 0.0, UNKNOWN, UNKNOWN, "left"),
        (5, 3, (80, 60, 400, 380), 0.0, "b", "sea_turtle", "right"),
    ]
    annots = [
        Annot(aid, gid, bbox, theta, name, species, vp, uuid.uuid5(uuid.NAMESPACE_URL, f"standin-annot-{aid}"))
        for aid, gid, bbox, theta, name, species, vp in rows
    ]
    return images, annots


def compute_chip(image_bgr: np.ndarray, bbox, theta, dim_size=CHIP_DIM_SIZE) -> np.ndarray:
    """Crop ``bbox`` out of the image with ``theta`` removed; longest side ``dim_size``."""
    x, y, w, h = bbox
    scale = dim_size / max(w, h)
    out_w, out_h = int(round(w * scale)), int(round(h * scale))
    cx, cy = x + w / 2.0, y + h / 2.0
    c, s = math.cos(-(theta or 0.0)), math.sin(-(theta or 0.0))
    # chip = T(out centre) @ S(scale) @ R(-theta) @ T(-bbox centre)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)
    to_origin = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], dtype=np.float64)
    scaling = np.diag([scale, scale, 1.0])
    to_chip = np.array([[1, 0, out_w / 2.0], [0, 1, out_h / 2.0], [0, 0, 1]], dtype=np.float64)
    matrix = (to_chip @ scaling @ rot @ to_origin)[:2]
    return cv2.warpAffine(image_bgr, matrix, (out_w, out_h), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_CONSTANT)


class StandinController:
    """``ibs``: annotations, names, chips, a cache dir and ``depc_annot``."""

    def __init__(self, seaturtle_dir: Path, cachedir: Path):
        self._image_paths, annots = default_annotations(Path(seaturtle_dir))
        self._annots = {a.aid: a for a in annots}
        self._names = {"a": 1, "b": 2}
        self._cachedir = Path(cachedir)
        self._chip_cache: dict[int, np.ndarray] = {}
        self.chip_calls = 0
        # bind every method registered through make_ibs_register_decorator (WBIA does this when
        # the controller is built, so plugins must be imported first)
        for name, func in controller_inject.bound_methods().items():
            setattr(self, name, functools.partial(func, self))
        self.depc_annot = DependencyCache(self)
        self.depc_annot.initialize()

    # --- annotations -------------------------------------------------------------------------
    def get_valid_aids(self, species=None):
        return [a.aid for a in self._annots.values() if species is None or a.species == species]

    @getter_1to1
    def get_annot_gids(self, aid):
        return self._annots[aid].gid

    @getter_1to1
    def get_annot_image_paths(self, aid):
        return str(self._image_paths[self._annots[aid].gid].resolve())

    def get_image_paths(self, gids):
        if isinstance(gids, (list, tuple, np.ndarray)):
            return [str(self._image_paths[int(g)].resolve()) for g in gids]
        return str(self._image_paths[gids].resolve())

    @getter_1to1
    def get_annot_bboxes(self, aid):
        return tuple(self._annots[aid].bbox)

    @getter_1to1
    def get_annot_thetas(self, aid):
        return self._annots[aid].theta

    @getter_1to1
    def get_annot_species_texts(self, aid):
        return self._annots[aid].species

    @getter_1to1
    def get_annot_viewpoints(self, aid):
        return self._annots[aid].viewpoint

    @getter_1to1
    def get_annot_uuids(self, aid):
        return self._annots[aid].uuid

    @getter_1to1
    def get_annot_aids_from_uuid(self, annot_uuid):
        if isinstance(annot_uuid, dict):  # a fancy UUID decoded from JSON
            annot_uuid = uuid.UUID(annot_uuid["__UUID__"])
        for a in self._annots.values():
            if a.uuid == annot_uuid:
                return a.aid
        return None

    @getter_1to1
    def get_annot_nids(self, aid, distinguish_unknowns=True):
        name = self._annots[aid].name
        if name == UNKNOWN:
            return -aid if distinguish_unknowns else UNKNOWN_NAME_ROWID
        return self._names[name]

    def get_annot_name_rowids(self, aids, distinguish_unknowns=True):
        return self.get_annot_nids(aids, distinguish_unknowns=distinguish_unknowns)

    def get_name_texts(self, nids):
        by_id = {v: k for k, v in self._names.items()}
        if isinstance(nids, (list, tuple, np.ndarray)):
            return [by_id.get(int(n), UNKNOWN) for n in nids]
        return by_id.get(int(nids), UNKNOWN)

    def get_name_uuids(self, nids):
        def one(n):
            return uuid.uuid5(uuid.NAMESPACE_URL, f"standin-name-{int(n)}") if int(n) > 0 else None

        if isinstance(nids, (list, tuple, np.ndarray)):
            return [one(n) for n in nids]
        return one(nids)

    def get_name_rowids_from_text(self, texts):
        if isinstance(texts, (list, tuple, np.ndarray)):
            return [self._names.get(t, UNKNOWN_NAME_ROWID) for t in texts]
        return self._names.get(texts, UNKNOWN_NAME_ROWID)

    # --- pixels ------------------------------------------------------------------------------
    def _load_image_bgr(self, gid) -> np.ndarray:
        with Image.open(self._image_paths[gid]) as im:
            rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        return np.ascontiguousarray(rgb[:, :, ::-1])

    def get_annot_chips(self, aid_list, config2_=None, ensure=True):
        def one(aid):
            aid = int(aid)
            if aid not in self._chip_cache:
                a = self._annots[aid]
                self._chip_cache[aid] = compute_chip(self._load_image_bgr(a.gid), a.bbox, a.theta)
            self.chip_calls += 1
            return self._chip_cache[aid].copy()

        if isinstance(aid_list, (list, tuple, np.ndarray)):
            return [one(a) for a in aid_list]
        return one(aid_list)

    def get_cachedir(self):
        self._cachedir.mkdir(parents=True, exist_ok=True)
        return str(self._cachedir)
