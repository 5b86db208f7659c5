"""One ``/explain/`` request's work, without HTTP: rules, URI policy, images, the hook, the reply.

In order:

1. ml-service's rules (:func:`.request.check_request`): 400 with its exact ``detail`` text;
2. the URI policy for every image before any file is touched (:mod:`.uris`, 403);
3. each distinct image (URI, box, angle) is read, cropped (bounded, :mod:`.crops`) and preprocessed once;
   a failure costs only the pairs that use the image;
4. the layer is checked against the model (400 "Invalid layer key"), then the pairs go through the
   core hook (:func:`pairx_plugin.hook.explain_matches`) under the model's lock;
5. the reply: ml-service's ``{"response": "visualizations", "images": [...], "count": n}`` plus our
   ``errors`` (and ``artifact_ids`` on request); a failed pair has ``null`` and its error at its index.
   If no pair was explained and every failure was an image that could not be loaded, the request
   answers as ml-service does: 400 ``"Error loading image: ..."``.
"""

from __future__ import annotations

import base64
import tempfile
from typing import Any

import numpy as np

from pairx_plugin.config import PairXConfig
from pairx_plugin.engine.locks import model_lock
from pairx_plugin.errors import ArtifactError, InvalidInputError
from pairx_plugin.images import LoadedImage, load_image, prepare_image
from pairx_plugin.records import MatchRecord

from .config import ServiceConfig
from .crops import crop_rotated
from .registry import LoadedModel, ModelRegistry
from .request import VISUALIZATION_PANELS, ExplainRequest, RequestRejected, batch_prefixed, check_request
from .uris import ImageLocation, client_message, fetch_http, resolve_uri, short_uri


class _PreparedImages:
    """``ImageSource`` over the request's distinct images (a failure is raised when loaded)."""

    def __init__(self) -> None:
        self.items: dict[str, LoadedImage | Exception] = {}

    def load(self, image_id: str) -> LoadedImage:
        item = self.items[image_id]
        if isinstance(item, Exception):
            raise item
        return item


class ExplainService:
    """The work behind the HTTP layer (usable without HTTP, e.g. from tests or a job queue)."""

    def __init__(self, config: ServiceConfig) -> None:
        from pairx_plugin.artifacts.store import ArtifactStore

        self.config = config
        root = config.output_dir or tempfile.mkdtemp(prefix="pairx-service-")
        self.store = ArtifactStore(root)
        self.models = ModelRegistry(config)

    # -------------------------------------------------------------------------------- images
    def _read_rgb(self, location: ImageLocation) -> np.ndarray:
        if location.path is not None:
            return load_image(location.path, max_pixels=self.config.max_image_pixels)
        data = fetch_http(location.url or "", self.config)
        with tempfile.NamedTemporaryFile(suffix=".img") as handle:
            handle.write(data)
            handle.flush()
            return load_image(handle.name, max_pixels=self.config.max_image_pixels)

    def _prepare(
        self, location: ImageLocation, box: tuple[float, ...], theta: float, model: LoadedModel
    ) -> LoadedImage:
        try:
            rgb = self._read_rgb(location)
        except Exception as exc:  # noqa: BLE001 - costs only the pairs using this image
            raise InvalidInputError(client_message(exc, location, self.config), stage="load") from None
        try:
            chip = crop_rotated(rgb, box, theta, max_pixels=self.config.max_image_pixels)
        except InvalidInputError as exc:
            raise InvalidInputError(f"image {short_uri(location.uri)!r}: {exc}", stage="crop") from None
        bundle = model.bundle
        return prepare_image(chip, bundle.input_size, bundle.mean, bundle.std)

    # -------------------------------------------------------------------------------- a request
    def explain(self, request: ExplainRequest) -> dict[str, Any]:
        from pairx_plugin.hook import explain_matches

        check_request(request, self.models.configured, self.config.max_pairs)
        pairs = request.pairs()
        # the URI policy for every image first: nothing is read if any URI is refused
        sides = {
            side: [resolve_uri(u, self.config) for u in uris]
            for side, uris in ((1, request.image1_uris), (2, request.image2_uris))
        }
        model = self.models.get(request.model_id)
        layer = request.layer_key or model.default_layer
        if not model.has_layer(layer):
            raise RequestRejected(
                "Invalid layer key",
                f"layer_key {layer[:120]!r} is not a module of model {model.model_id!r}; "
                "list them with 'pairx-plugin layers --model SPEC'",
            )
        if not pairs:
            return {"response": "visualizations", "images": [], "count": 0, "errors": []}

        source = _PreparedImages()
        ids: dict[int, list[str]] = {1: [], 2: []}
        key_to_id: dict[tuple[Any, ...], str] = {}
        for side in (1, 2):
            boxes, thetas = request.boxes(side), request.thetas(side)
            for index, location in enumerate(sides[side]):
                key = (location.uri, boxes[index], thetas[index])
                if key not in key_to_id:  # each distinct image is read and preprocessed once
                    image_id = f"image{len(key_to_id)}"
                    key_to_id[key] = image_id
                    try:
                        source.items[image_id] = self._prepare(location, boxes[index], thetas[index], model)
                    except Exception as exc:  # noqa: BLE001 - costs only the pairs using this image
                        source.items[image_id] = exc
                ids[side].append(key_to_id[key])

        unique_pairs: dict[tuple[str, str], int] = {}
        records: list[MatchRecord] = []
        per_query_rank: dict[str, int] = {}
        for i, j in pairs:
            pair = (ids[1][i], ids[2][j])
            if pair in unique_pairs:
                continue
            rank = per_query_rank.get(pair[0], 0)
            per_query_rank[pair[0]] = rank + 1
            unique_pairs[pair] = len(records)
            records.append(MatchRecord(query_id=pair[0], candidate_id=pair[1], rank=rank, score=float("nan")))
        panel = VISUALIZATION_PANELS[request.visualization_type]
        config = PairXConfig(
            **{
                **self.config.pairx.model_dump(),
                "layer_keys": [layer],
                # ml-service accepts 0 (nothing drawn); the engine draws at least one
                "k_colors": max(1, request.k_colors),
                "k_lines": max(1, request.k_lines),
                "top_k": max(per_query_rank.values()),
                "render": [panel],
            }
        )
        with model_lock(model.bundle.model):
            explained = explain_matches(
                records=records,
                images=source,
                model=model.bundle.model,
                config=config,
                store=self.store,
                progress=False,
            )
        return self._reply(request, pairs, ids, unique_pairs, explained, panel, source)

    def _reply(
        self,
        request: ExplainRequest,
        pairs: list[tuple[int, int]],
        ids: dict[int, list[str]],
        unique_pairs: dict[tuple[str, str], int],
        explained: list[MatchRecord],
        panel: str,
        source: _PreparedImages,
    ) -> dict[str, Any]:
        images: list[str | None] = []
        errors: list[dict[str, Any] | None] = []
        artifact_ids: list[str | None] = []
        for i, j in pairs:
            record = explained[unique_pairs[(ids[1][i], ids[2][j])]]
            if record.explanation is None:
                info = record.explanation_error
                images.append(None)
                artifact_ids.append(None)
                errors.append(
                    {
                        "type": info.type if info else "PairXError",
                        "message": info.message if info else "not explained",
                        "stage": info.stage if info else None,
                    }
                )
                continue
            try:
                png = (self.store.root / record.explanation.images[panel]).read_bytes()
            except (OSError, KeyError):
                images.append(None)
                artifact_ids.append(None)
                errors.append(
                    {"type": "ArtifactError", "message": "the stored picture could not be read", "stage": "store"}
                )
                continue
            images.append(base64.b64encode(png).decode("ascii"))
            artifact_ids.append(record.explanation.artifact_id)
            errors.append(None)
        if all(image is None for image in images):
            self._raise_if_no_image_loaded(request, pairs, ids, source)
        out: dict[str, Any] = {"response": "visualizations", "images": images, "count": len(images), "errors": errors}
        if request.return_artifacts:
            out["artifact_ids"] = artifact_ids
        return out

    @staticmethod
    def _raise_if_no_image_loaded(
        request: ExplainRequest, pairs: list[tuple[int, int]], ids: dict[int, list[str]], source: _PreparedImages
    ) -> None:
        """ml-service's answer when images cannot be loaded: 400 ``Error loading image: ...`` (the first one).

        Only when every pair failed because of one of its images (read or crop); if some pair failed in
        the engine instead, the reply keeps the per-pair errors.
        """
        first: tuple[int, int, Exception] | None = None
        for i, j in pairs:
            failed = [
                (side, index, item)
                for side, index in ((1, i), (2, j))
                if isinstance(item := source.items[ids[side][index]], Exception)
            ]
            if not failed:
                return  # this pair's images were fine: its own error says what went wrong
            first = first or failed[0]
        if first is not None:
            side, index, error = first
            prefixed = not (side == 1 and request.one_to_n)
            detail = batch_prefixed(f"Error loading image: {error}", prefixed)
            raise RequestRejected(detail, f"image{side}_uris[{index}]: {error}")

    def artifact(self, artifact_id: str) -> dict[str, Any]:
        if (
            not isinstance(artifact_id, str)
            or len(artifact_id) != 64
            or not all(c in "0123456789abcdef" for c in artifact_id)
        ):
            raise InvalidInputError(f"artifact id {artifact_id[:80]!r} is not a 64-character lowercase hex sha256")
        try:
            document = self.store.load(artifact_id)
        except ArtifactError:
            raise ArtifactError(f"no artifact {artifact_id} in this service's store") from None
        return document.model_dump(mode="json")


__all__ = ["ExplainService"]
