"""Safe image loading and the model-input / display pair built from the same crop.

:func:`load_image` turns a file into an RGB uint8 array or raises :class:`InvalidInputError`
naming the file and the problem. It reads the header first and refuses images over a pixel
limit *before* decoding them (decompression bombs), so a hostile file costs no memory.

:func:`prepare_image` crops (optional bounding box), resizes exactly like torchvision's
``Resize((S, S))`` on a PIL image (PIL bilinear, antialiased when shrinking), and normalises;
the display image is the same crop, untouched, so overlays align with it.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidInputError

DEFAULT_MAX_PIXELS = 50_000_000  # about 7000 x 7000; larger files are refused before decoding
MIN_SIDE = 8


@dataclass(frozen=True)
class LoadedImage:
    """One image as the model sees it and as people see it.

    tensor: (1, 3, H, W) float tensor, exactly what is fed to the model.
    display: (h, w, 3) uint8 RGB, the same crop as ``tensor`` before resizing/normalising, so match
        coordinates scale linearly between the two.
    sha256: hash of the source (file bytes or pixels), when the source knows it.
    foreground: where the animal is, when the host knows: an (h, w) mask (bool, 0..1 or 0..255) or an
        ``[x, y, width, height]`` box, in display pixels; the evidence score uses it (docs/metrics.md).
    """

    tensor: torch.Tensor
    display: np.ndarray
    sha256: str | None = None
    foreground: np.ndarray | tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        tensor, display = self.tensor, self.display
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 4 or tensor.shape[0] != 1 or tensor.shape[1] != 3:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise InvalidInputError(
                f"LoadedImage.tensor must be a (1, 3, H, W) tensor, got {shape}; add the batch dim with unsqueeze(0)"
            )
        if not tensor.is_floating_point():
            raise InvalidInputError(
                f"LoadedImage.tensor must be a float tensor, got {tensor.dtype}; normalise the image first"
            )
        is_rgb = isinstance(display, np.ndarray) and display.ndim == 3 and display.shape[2] == 3
        if not is_rgb or display.dtype != np.uint8:
            desc = f"{display.shape} {display.dtype}" if isinstance(display, np.ndarray) else type(display).__name__
            raise InvalidInputError(f"LoadedImage.display must be an (h, w, 3) uint8 RGB array, got {desc}")
        if min(display.shape[:2]) < 1:
            raise InvalidInputError(f"LoadedImage.display is empty ({display.shape}); pass the image crop")
        if self.foreground is not None:
            from .evidence.foreground import as_mask

            as_mask(self.foreground, display.shape[:2], "LoadedImage.foreground")  # raises naming the problem

    @property
    def input_size(self) -> tuple[int, int]:
        return (int(self.tensor.shape[2]), int(self.tensor.shape[3]))

    @property
    def display_size(self) -> tuple[int, int]:
        return (int(self.display.shape[0]), int(self.display.shape[1]))

    def content_sha256(self) -> str:
        """Hash of what gets explained: the input tensor, the display image and the source hash.

        The tensor is part of it because the same file preprocessed differently (another input size)
        is another explanation.
        """
        digest = hashlib.sha256(b"pairx-loaded-image-v1\0")
        digest.update(f"{self.sha256 or ''}\0".encode())
        tensor = self.tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.numpy().tobytes())
        digest.update(f"{self.display.shape}\0".encode())
        digest.update(np.ascontiguousarray(self.display).tobytes())
        if self.foreground is not None:  # another animal mask is another evidence score
            digest.update(b"foreground\0" + np.ascontiguousarray(np.asarray(self.foreground, np.float64)).tobytes())
        return digest.hexdigest()


@runtime_checkable
class ImageSource(Protocol):
    """Anything that turns an image id into a :class:`LoadedImage` (and may raise for a bad id)."""

    def load(self, image_id: str) -> LoadedImage: ...


def as_loaded_image(value: Any, image_id: str) -> LoadedImage:
    """``value`` as a :class:`LoadedImage` (a compatible object is converted); the error names ``image_id``."""
    if isinstance(value, LoadedImage):
        return value
    if hasattr(value, "tensor") and hasattr(value, "display"):  # a compatible type from elsewhere
        return LoadedImage(
            tensor=value.tensor,
            display=value.display,
            sha256=getattr(value, "sha256", None),
            foreground=getattr(value, "foreground", None),
        )
    raise InvalidInputError(
        f"the image source returned {type(value).__name__} for id {image_id!r}; it must return a LoadedImage"
    )


def _bad(path: Path | str, problem: str) -> InvalidInputError:
    """An error naming the file (very long paths shortened in the middle) and the problem."""
    text = str(path)
    if len(text) > 160:
        text = f"{text[:70]}...{text[-70:]}"
    return InvalidInputError(f"image {text!r}: {problem}")


def _open_header(path: Path, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and enforce the pixel limit before any pixel is decoded.

    PIL's own guard warns above ``Image.MAX_IMAGE_PIXELS`` and refuses twice that; its warning is
    silenced here because ``max_pixels`` is the limit that applies (the global is left alone).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise _bad(
            path,
            f"too many pixels, refused as a possible decompression bomb ({exc}); "
            f"downscale the image or raise max_pixels",
        ) from None
    except UnidentifiedImageError:
        raise _bad(path, "not a readable image (unknown or corrupt format); pass a JPEG/PNG/TIFF/WebP file") from None
    except OSError as exc:
        raise _bad(path, f"cannot be read ({exc.strerror or exc}); check the file and its permissions") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise _bad(
            path,
            f"{width}x{height} = {width * height} pixels exceeds the limit of "
            f"{max_pixels} (possible decompression bomb); downscale the image or raise max_pixels",
        )
    if min(width, height) < MIN_SIDE:
        image.close()
        raise _bad(
            path,
            f"{width}x{height} is too small (each side must be at least {MIN_SIDE} px); "
            f"pass the real photo, not a thumbnail or placeholder",
        )
    return image


def _high_bit_depth_to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale 16-bit (or wider integer) samples to 0-255 by the type's range, not by clipping."""
    array = np.asarray(array)
    if array.dtype == np.uint16 or (
        array.dtype.kind in "iu" and array.max(initial=0) > 255 and array.max(initial=0) <= 65535
    ):
        scaled = array.astype(np.float64) * (255.0 / 65535.0)
    elif array.dtype.kind == "f":
        peak = float(np.nanmax(array)) if array.size else 0.0
        scaled = np.nan_to_num(array.astype(np.float64)) * (255.0 if peak <= 1.0 else 255.0 / max(peak, 1e-12))
    elif array.dtype.kind in "iu" and array.max(initial=0) > 65535:
        scaled = array.astype(np.float64) * (255.0 / float(np.iinfo(np.int32).max))
    else:
        scaled = array.astype(np.float64)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any PIL mode to HxWx3 uint8 RGB; transparency is composited over white."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8)
    if mode.startswith("I") or mode == "F":  # 16/32-bit grey (e.g. 16-bit PNG opens as "I;16")
        grey = _high_bit_depth_to_uint8(np.asarray(image))
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def load_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array (EXIF orientation applied).

    Grayscale, palette, RGBA (composited over white) and 16-bit images (scaled by 255/65535) are
    converted. Raises :class:`InvalidInputError` for a missing, unreadable, truncated, tiny
    (a side under 8 px) or oversized (more than ``max_pixels``) image.
    """
    path = Path(path)
    try:
        exists, is_file = path.exists(), path.is_file()
    except (OSError, ValueError) as exc:  # a NUL byte, a name too long for the file system, ...
        reason = getattr(exc, "strerror", None) or str(exc)  # strerror leaves the (long) name out
        raise _bad(path, f"is not a usable path ({reason}); check the path") from None
    if not exists:
        raise _bad(path, "file not found; check the path")
    if not is_file:
        raise _bad(path, "is not a regular file; pass an image file")
    image = _open_header(path, max_pixels)
    try:
        with image:
            try:
                image.load()
            except (OSError, SyntaxError, ValueError) as exc:
                raise _bad(
                    path, f"cannot be decoded, the file is truncated or corrupt ({exc}); re-export or re-download it"
                ) from None
            oriented = ImageOps.exif_transpose(image)
            rgb = _to_rgb_array(oriented)
    except Image.DecompressionBombError as exc:  # pragma: no cover - guarded by the header check
        raise _bad(path, f"refused as a possible decompression bomb ({exc})") from None
    return np.ascontiguousarray(rgb)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    array = np.asarray(rgb)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise InvalidInputError(
            f"prepare_image: rgb must be an HxWx3 uint8 array, got dtype {array.dtype} shape "
            f"{array.shape}; use load_image() to read files"
        )
    if min(array.shape[:2]) < 1:
        raise InvalidInputError(f"prepare_image: rgb is empty (shape {array.shape})")
    return array


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        height = width = int(size)
    else:
        try:
            height, width = (int(v) for v in size)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise InvalidInputError(f"prepare_image: size must be an int or (H, W), got {size!r}") from None
    if height < MIN_SIDE or width < MIN_SIDE:
        raise InvalidInputError(f"prepare_image: size {size!r} is too small; use at least {MIN_SIDE} px per side")
    return height, width


def crop_box(rgb: np.ndarray, bbox: Sequence[float] | None) -> np.ndarray:
    """The ``(x, y, w, h)`` crop of ``rgb`` (pixels, clipped to the image); the whole image for None."""
    if bbox is None:
        return rgb
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise InvalidInputError(f"bbox must be (x, y, w, h) in pixels, got {bbox!r}") from None
    if not all(np.isfinite([x, y, w, h])) or w <= 0 or h <= 0:
        raise InvalidInputError(f"bbox {bbox!r} must have finite values and positive width and height")
    height, width = rgb.shape[:2]
    left, top = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
    right, bottom = min(width, int(np.ceil(x + w))), min(height, int(np.ceil(y + h)))
    if right - left < 1 or bottom - top < 1:
        raise InvalidInputError(f"bbox {bbox!r} lies outside the {width}x{height} image; pass (x, y, w, h) inside it")
    return np.ascontiguousarray(rgb[top:bottom, left:right])


def image_sha256(rgb: np.ndarray) -> str:
    """sha256 hex of the pixels (shape, then bytes): equal pixels hash equal, whatever the file format."""
    digest = hashlib.sha256(f"{rgb.shape[0]}x{rgb.shape[1]}x{rgb.shape[2]}:".encode())
    digest.update(np.ascontiguousarray(rgb).tobytes())
    return digest.hexdigest()


def prepare_image(
    rgb: np.ndarray,
    size: int | Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    bbox: Sequence[float] | None = None,
) -> LoadedImage:
    """Model input tensor (1, 3, H, W) and display crop from one RGB image.

    Equivalent to torchvision ``Compose([Resize((H, W)), ToTensor(), Normalize(mean, std)])`` on
    the PIL crop. ``sha256`` hashes the crop's pixels.
    """
    crop = crop_box(_check_rgb(rgb), bbox)
    height, width = _size_hw(size)
    if len(mean) != 3 or len(std) != 3 or any(float(s) <= 0 for s in std):
        raise InvalidInputError(f"prepare_image: mean and std need 3 values each and std > 0, got {mean!r}, {std!r}")
    resized = np.asarray(Image.fromarray(crop).resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
    tensor = torch.from_numpy(resized / 255.0).permute(2, 0, 1).contiguous()
    mean_t = torch.tensor([float(v) for v in mean], dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor([float(v) for v in std], dtype=torch.float32).view(3, 1, 1)
    tensor = ((tensor - mean_t) / std_t).unsqueeze(0)
    return LoadedImage(tensor=tensor, display=crop, sha256=image_sha256(crop))


class FileImageSource:
    """An ``ImageSource`` over files: ``load(image_id)`` reads, crops and preprocesses one image.

    ``paths`` maps image ids to files; ``bboxes`` optionally maps ids to ``(x, y, w, h)`` crops.
    Ids are only dictionary keys here, never parts of a file name.
    """

    def __init__(
        self,
        paths: Mapping[str, str | os.PathLike],
        size: int | Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        *,
        bboxes: Mapping[str, Sequence[float]] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.paths = dict(paths)
        self.size = size
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.bboxes = dict(bboxes or {})
        self.max_pixels = max_pixels

    def load(self, image_id: str) -> LoadedImage:
        if image_id not in self.paths:
            raise InvalidInputError(
                f"image id {image_id!r} is not in this FileImageSource ({len(self.paths)} ids known); "
                f"add it to the id -> path mapping"
            )
        rgb = load_image(self.paths[image_id], max_pixels=self.max_pixels)
        return prepare_image(rgb, self.size, self.mean, self.std, bbox=self.bboxes.get(image_id))
