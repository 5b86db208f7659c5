"""ml-service's ``/explain/`` request: its fields and defaults, and its 400 rules with their exact texts.

WildMe's ml-service (``app/routers/explain_router.py``) answers a bad request with status 400 and a
``detail`` string that its clients and tests compare exactly (the whole JSON body); :class:`RequestRejected` carries
that text, plus a ``hint`` of ours (which field, what to do), sent in the ``X-PairX-Hint`` header so
that the body stays ml-service's.

Box errors of the candidate side (and of every image in an N-to-N request) carry the ``"400: "``
prefix that ml-service's batch path adds when it re-raises an image's error; the query image of a
1-to-N request gets the plain text (as ml-service's own tests expect).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .config import MLSERVICE_MODEL_IDS

VISUALIZATION_PANELS = {"lines_and_colors": "composite", "only_lines": "only_lines", "only_colors": "only_colors"}
NO_BOX = (0.0, 0.0, 0.0, 0.0)  # ml-service's padding value: no crop
K_MAX = 99

Box = list[float]


class RequestRejected(Exception):
    """A whole request refused: ``status`` (400 unless said), ml-service's ``detail`` text and our ``hint``."""

    def __init__(self, detail: str, hint: str, status: int = 400) -> None:
        super().__init__(detail)
        self.detail = detail
        self.hint = hint
        self.status = status

    def body(self) -> dict[str, Any]:
        """ml-service's body, exactly (its tests compare the whole JSON); the hint travels in a header."""
        return {"detail": self.detail}


def batch_prefixed(detail: str, prefixed: bool) -> str:
    """ml-service's batch path re-raises an image's error as ``"400: <detail>"``."""
    return f"400: {detail}" if prefixed else detail


def _no_angle() -> list[float | None]:
    return [0.0]  # ml-service's default for theta1 and theta2


class ExplainRequest(BaseModel):
    """ml-service's ``/explain/`` body, with its defaults. Unknown fields are ignored, as there.

    Our additions: ``bb*`` may be left out, a single ``[x, y, w, h]`` or contain ``null`` (no crop);
    ``theta*`` may be one number or contain ``null``; ``return_artifacts`` also returns artifact ids.
    """

    model_config = ConfigDict(extra="ignore")

    image1_uris: list[str]
    bb1: list[list[float] | None] | Box | None = None
    theta1: list[float | None] | float | None = Field(default_factory=_no_angle)
    image2_uris: list[str]
    bb2: list[list[float] | None] | Box | None = None
    theta2: list[float | None] | float | None = Field(default_factory=_no_angle)
    model_id: str = "miewid-msv4.1"
    crop_bbox: bool = False
    visualization_type: str = "only_colors"
    layer_key: str | None = Field(None, description="Default: the model's configured layer, else 'backbone.blocks.3'.")
    k_lines: int = 20
    k_colors: int = 5
    algorithm: str = "pairx"
    return_artifacts: bool = Field(False, description="Also return the JSON artifact ids (ours).")

    @field_validator("k_colors", "k_lines", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be an integer, not a boolean")
        return value

    @property
    def one_to_n(self) -> bool:
        return len(self.image1_uris) == 1

    def pairs(self) -> list[tuple[int, int]]:
        """(index into image1_uris, index into image2_uris) per pair, in reply order."""
        if self.one_to_n:
            return [(0, j) for j in range(len(self.image2_uris))]
        return [(i, i) for i in range(len(self.image1_uris))]

    def boxes(self, side: int) -> list[tuple[float, ...]]:
        """One box per image of ``side`` (1 or 2): missing ones padded with ``[0, 0, 0, 0]`` (no crop)."""
        raw = self.bb1 if side == 1 else self.bb2
        count = len(self.image1_uris if side == 1 else self.image2_uris)
        if raw is None:
            given: list[Any] = []
        elif raw and all(isinstance(v, (int, float)) for v in raw):
            given = [raw]  # one flat box: ours, for every image of the side
            if count > 1 and len(raw) == 4:
                given = [raw] * count
        else:
            given = list(raw)
        padded = [NO_BOX if box is None else tuple(box) for box in given[:count]]
        return padded + [NO_BOX] * (count - len(padded))

    def thetas(self, side: int) -> list[float]:
        """One angle per image of ``side``: missing ones padded with ``0.0``."""
        raw = self.theta1 if side == 1 else self.theta2
        count = len(self.image1_uris if side == 1 else self.image2_uris)
        if raw is None:
            given: list[float | None] = []
        elif isinstance(raw, (int, float)):
            given = [raw] * count
        else:
            given = list(raw)
        padded = [0.0 if t is None else float(t) for t in given[:count]]
        return padded + [0.0] * (count - len(padded))


def check_request(request: ExplainRequest, configured: list[str], max_pairs: int) -> None:
    """ml-service's rules, in its order; :class:`RequestRejected` with its exact ``detail`` text.

    ``configured`` are the model ids of the service config (lower case).
    """
    if request.algorithm.lower() != "pairx":
        raise RequestRejected("Unsupported algorithm.", f"algorithm {request.algorithm[:60]!r}: send 'pairx'")
    for name, label, value in (("k_lines", "K Lines", request.k_lines), ("k_colors", "K Colors", request.k_colors)):
        if value < 0:
            raise RequestRejected(f"{label} must be positive", f"{name} is {value}; send 0 to {K_MAX}")
        if value > K_MAX:
            raise RequestRejected(f"{label} must be less than 100", f"{name} is {value}; send 0 to {K_MAX}")
    if request.visualization_type not in VISUALIZATION_PANELS:
        raise RequestRejected(
            "Unsupported visualization type.",
            f"visualization_type {request.visualization_type[:60]!r}: send one of {sorted(VISUALIZATION_PANELS)}",
        )
    model_id = request.model_id.lower()
    if model_id not in MLSERVICE_MODEL_IDS and model_id not in configured:
        raise RequestRejected(
            "Unsupported model for pairx.", f"model_id {request.model_id[:60]!r}: configured here: {sorted(configured)}"
        )
    if model_id not in configured:
        raise RequestRejected(
            f"Model {model_id} is not configured on this service: set models.{model_id} in the service config",
            f"add 'models: {{{model_id}: {{spec: ..., weights: ...}}}}' to the file given to 'pairx-plugin serve "
            "--config' (see docs/service.md)",
        )
    n1, n2 = len(request.image1_uris), len(request.image2_uris)
    if n1 == 0 or (n1 != 1 and n1 != n2):
        raise RequestRejected(
            "Either provide only one image 1 or the same number of image1s and image2s.",
            f"image1_uris has {n1} and image2_uris {n2} entries; send one query image (1-to-N) "
            "or equally long lists (N-to-N)",
        )
    pairs = len(request.pairs())
    if pairs > max_pairs:
        raise RequestRejected(
            f"Batch exceeded max size of {max_pairs}",
            f"{pairs} pairs requested; split the request into batches of at most {max_pairs}",
        )
    for side in (1, 2):
        prefixed = not (side == 1 and request.one_to_n)
        for index, box in enumerate(request.boxes(side)):
            field = f"bb{side}[{index}]"
            if len(box) != 4:
                raise RequestRejected(
                    batch_prefixed("Each bounding box should have 4 values", prefixed),
                    f"{field} has {len(box)} values; send [x, y, w, h] in pixels",
                )
            if any(v < 0 for v in box):
                raise RequestRejected(
                    batch_prefixed("Bounding box values should be positive", prefixed),
                    f"{field} = {_short(box)}; send non-negative [x, y, w, h]",
                )
            if not all(math.isfinite(v) for v in box):
                raise RequestRejected(
                    batch_prefixed("Bounding box values should be positive", prefixed),
                    f"{field} = {_short(box)} is not finite; send finite pixel values",
                )


def _short(value: Any, limit: int = 120) -> str:
    text = repr(list(value)) if isinstance(value, tuple) else repr(value)
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 2 :]}"


__all__ = ["NO_BOX", "VISUALIZATION_PANELS", "ExplainRequest", "RequestRejected", "batch_prefixed", "check_request"]
