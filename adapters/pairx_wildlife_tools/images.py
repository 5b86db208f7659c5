"""Images for the hook, loaded exactly as a wildlife-tools dataset loads them for the model.

The explained tensor must be the tensor that was scored. A wildlife-tools dataset (0.0.9
``WildlifeDataset`` or 1.x ``ImageDataset``) builds it in ``__getitem__``: ``get_image`` reads the
file, the ``img_load`` mode crops or masks it (``bbox``, ``crop_black``, ...), then ``transform``
makes the tensor. :class:`DatasetImageSource` runs the dataset's own ``__getitem__`` on a shallow copy
whose ``transform`` is switched off, so it gets the very crop the pipeline produced without touching
the user's dataset object, and applies the dataset's ``transform`` to that crop itself.

The display image comes from the same crop: the transform minus its ``Normalize`` steps (so resizes
and crops stay pixel-aligned with the tensor); when the transform cannot be taken apart, the crop is
resized to the tensor's size.
"""

from __future__ import annotations

import copy
import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from pairx_plugin.errors import InvalidInputError

ID_COLUMN = "image_id"


def image_ids(dataset: Any, id_column: str = ID_COLUMN) -> list[str]:
    """The ids of a dataset's rows: its ``image_id`` column, else the row position as a string."""
    metadata = getattr(dataset, "metadata", None)
    if metadata is None:
        raise InvalidInputError(
            f"{type(dataset).__name__} has no 'metadata' table; pass a wildlife-tools dataset "
            "(WildlifeDataset, ImageDataset or FeatureDataset) whose metadata lists the images"
        )
    if id_column in metadata.columns:
        ids = [str(v) for v in metadata[id_column].tolist()]
        if len(set(ids)) != len(ids):
            dupes = sorted(i for i, n in Counter(ids).items() if n > 1)
            raise InvalidInputError(
                f"metadata column {id_column!r} repeats ids {dupes[:5]}; give every image a unique id"
            )
        return ids
    return [str(i) for i in range(len(metadata))]


def is_unknown_label(value: Any) -> bool:
    """An empty identity cell: missing (NaN/None) or blank text. Such an image has no label."""
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    try:
        import pandas as pd

        if pd.isna(value):
            return True
    except (TypeError, ValueError):
        pass
    return isinstance(value, str) and not value.strip()


def labels(dataset: Any) -> list[str | None]:
    """String labels of a dataset's rows, ``None`` for an empty identity cell or a dataset without labels.

    Read from the metadata's label column (``col_label``) rather than ``labels_string``: wildlife-tools'
    ``labels_string`` turns an empty cell into the text ``"nan"``, which would look like an identity.
    """
    metadata = getattr(dataset, "metadata", None)
    column = getattr(dataset, "col_label", "identity")
    if metadata is not None and column in getattr(metadata, "columns", ()):
        return [None if is_unknown_label(v) else str(v) for v in metadata[column].tolist()]
    values = getattr(dataset, "labels_string", None)
    if values is None:
        return [None] * len(dataset)
    return [None if v is None else str(v) for v in list(values)]


def _without_normalize(transform: Callable | None) -> Callable | None:
    """The transform with every torchvision ``Normalize`` removed, or None when it is not a Compose."""
    from torchvision import transforms as T

    if isinstance(transform, T.Compose):
        kept = [t for t in transform.transforms if not isinstance(t, T.Normalize)]
        return T.Compose(kept)
    return None


def _to_display_array(value: Any) -> np.ndarray | None:
    """HxWx3 uint8 from a [0,1] CHW tensor, a PIL image or an HWC array; None when not an RGB image."""
    if isinstance(value, Image.Image):
        return np.asarray(value.convert("RGB"), dtype=np.uint8).copy()
    if isinstance(value, torch.Tensor) and value.ndim == 3 and value.shape[0] == 3:
        scaled = value.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
        return scaled.permute(1, 2, 0).cpu().numpy().copy()
    if isinstance(value, np.ndarray) and value.ndim == 3 and value.shape[2] == 3:
        array = value if value.dtype == np.uint8 else np.clip(value, 0, 255).astype(np.uint8)
        return array.copy()
    return None


@dataclass(frozen=True)
class _Entry:
    dataset: Any
    index: int


class DatasetImageSource:
    """An ``ImageSource`` (``load(image_id) -> LoadedImage``) over one or more wildlife-tools datasets.

    Ids come from each dataset's ``image_id`` column (row position when absent). The same id in two
    datasets must name the same file; with no split the query and database are the same dataset.
    """

    def __init__(self, datasets: Sequence[Any], id_column: str = ID_COLUMN):
        self._entries: dict[str, _Entry] = {}
        for dataset in datasets:
            for index, image_id in enumerate(image_ids(dataset, id_column)):
                known = self._entries.get(image_id)
                if known is not None and self._path(known) != self._path(_Entry(dataset, index)):
                    raise InvalidInputError(
                        f"image id {image_id!r} names two different files ({self._path(known)!r} and "
                        f"{self._path(_Entry(dataset, index))!r}); make the ids unique across query and database"
                    )
                self._entries.setdefault(image_id, _Entry(dataset, index))

    @staticmethod
    def _path(entry: _Entry) -> str:
        dataset = entry.dataset
        column = getattr(dataset, "col_path", "path")
        try:
            return str(dataset.metadata.iloc[entry.index][column])
        except (KeyError, AttributeError):
            return f"{id(dataset)}:{entry.index}"

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._entries

    def crop(self, image_id: str) -> Image.Image:
        """The dataset's loaded and cropped image (``get_image`` + ``img_load``), before ``transform``."""
        entry = self._entries.get(image_id)
        if entry is None:
            raise InvalidInputError(
                f"image id {image_id!r} is in neither the query nor the database dataset; "
                "use ids from the datasets' 'image_id' column (or row positions when it has none)"
            )
        raw_view = copy.copy(entry.dataset)  # shallow: the user's dataset keeps its transform
        raw_view.transform = None
        if hasattr(raw_view, "load_label"):
            raw_view.load_label = False
        try:
            item = raw_view[entry.index]
        except Exception as exc:
            raise InvalidInputError(
                f"cannot load image {image_id!r} ({self._path(entry)!r}) through "
                f"{type(entry.dataset).__name__}: {exc}; check the path, root and img_load settings"
            ) from exc
        if isinstance(item, tuple):  # a dataset that ignores load_label
            item = item[0]
        if not isinstance(item, Image.Image):
            array = _to_display_array(item)
            if array is None:
                raise InvalidInputError(
                    f"{type(entry.dataset).__name__} returned {type(item).__name__} for {image_id!r} "
                    "with its transform off, not an image; pass the image datasets (WildlifeDataset / "
                    "ImageDataset) the features were computed from, not the features"
                )
            item = Image.fromarray(array)
        return item

    def load(self, image_id: str):
        """``LoadedImage`` for the hook: the model's input tensor and a display image of the same crop."""
        from pairx_plugin.hook import LoadedImage

        crop = self.crop(image_id)  # raises for an unknown id
        entry = self._entries[image_id]
        transform = getattr(entry.dataset, "transform", None)
        if transform is None:
            raise InvalidInputError(
                f"{type(entry.dataset).__name__} for {image_id!r} has no transform, so it yields PIL "
                "images, not tensors; give the dataset the transform the model was fed with"
            )
        tensor = transform(crop)
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3:
            raise InvalidInputError(
                f"the dataset's transform gave {type(tensor).__name__} for {image_id!r}; "
                "it must give a (3, H, W) tensor as DeepFeatures feeds the model"
            )
        display = self._display(transform, crop, (int(tensor.shape[-2]), int(tensor.shape[-1])))
        pixels = np.asarray(crop.convert("RGB"), dtype=np.uint8)
        digest = hashlib.sha256(f"{pixels.shape}\0".encode())
        digest.update(np.ascontiguousarray(pixels).tobytes())  # the source: the crop's pixels
        return LoadedImage(
            tensor=tensor.unsqueeze(0),
            display=display,
            sha256=digest.hexdigest(),
            foreground=self._foreground(entry, transform, crop, display.shape[:2]),
        )  # H6: evidence

    def _foreground(
        self, entry: _Entry, transform: Callable, crop: Image.Image, size: tuple[int, int]
    ) -> np.ndarray | None:
        """The row's animal mask (segmentation or bbox) taken through the display transform, or None."""
        from .foreground import row_foreground

        mask = row_foreground(entry.dataset, entry.index, (crop.height, crop.width))
        if mask is None:
            return None
        as_image = Image.fromarray(mask.astype(np.uint8) * 255).convert("RGB")
        return self._display(transform, as_image, size)[..., 0] > 127

    @staticmethod
    def _display(transform: Callable, crop: Image.Image, size: tuple[int, int]) -> np.ndarray:
        plain = _without_normalize(transform)
        if plain is not None:
            array = _to_display_array(plain(crop))
            if array is not None and array.shape[:2] == size:
                return array
        height, width = size
        return np.asarray(crop.convert("RGB").resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8).copy()
