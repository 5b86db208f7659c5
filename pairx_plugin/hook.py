"""The post-matching hook: records in, the same records out, each with an explanation or an error.

The hook contract is the typed, keyword-only signature of :func:`explain_matches`::

    explain_matches(*, records: Sequence[MatchRecord | Mapping], images: ImageSource,
                    model: nn.Module, config: PairXConfig | Mapping | str | PathLike,
                    store: ArtifactStore | None = None, engine: PairX | None = None,
                    progress: bool = True, run_name: str | None = None) -> list[MatchRecord]

Hosts and adapters call it with keywords. It guarantees:

* every record comes back, in the same order, with the host's score and rank unchanged, as a new
  object (inputs are never mutated);
* records are grouped by query, so each query image is loaded and forwarded once with all of its
  candidates (in chunks of ``max_batch_images``; the engine halves a chunk that runs out of memory);
* a failure costs only the record(s) it concerns: a query image that cannot be loaded fails that
  query's records, a candidate image or a pair failing in the engine, renderer or store fails that
  record, with ``explanation_error.stage`` saying where. Each such failure is logged on the
  ``pairx_plugin.hook`` logger: its one-line cause at WARNING, its traceback at DEBUG;
* records with ``rank >= top_k`` are returned unchanged (copies) with no explanation and no error,
  and appear in the manifest as ``not_explained``; the second and later records with the same
  ``(query_id, candidate_id)`` get an ``InvalidInputError`` at stage ``load``;
* an artifact that already exists in the store (same content address) is a cache hit: no engine work,
  ``explanation.cache_hit`` is true;
* the run's manifest ``runs/<run_name>.jsonl`` is created exclusively before any work: a run name
  that exists already raises :class:`~pairx_plugin.errors.ArtifactError`; the default name is unique
  across processes (:func:`~pairx_plugin.artifacts.store.new_run_name`).

The runner is four steps: plan (group by query, chunk) → load images (cached per run) → engine
(``PairX.explain_query(..., return_exceptions=True)``) → record (render, build and store each pair's
artifact with :func:`pairx_plugin.artifacts.build.store_pair`, write the manifest line).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import PairXConfig, load_config, resolve_device
from .errors import ConfigError, InvalidInputError, PairXError
from .evidence.rerank import rerank_records
from .images import ImageSource, LoadedImage, as_loaded_image
from .records import STAGES, ExplanationErrorInfo, MatchRecord, coerce_records

if TYPE_CHECKING:  # imported at call time: the engine and the store pull in torch and pillow
    import torch
    from torch import nn

    from .artifacts.build import PairContext
    from .artifacts.schema import ManifestStatus
    from .artifacts.store import ArtifactStore, RunManifest
    from .engine.engine import PairX

logger = logging.getLogger(__name__)

IMAGE_CACHE_SIZE = 64  # images kept per run (a query's candidates are often other queries' images)


def explain_matches(
    *,
    records: Sequence[MatchRecord],
    images: ImageSource,
    model: nn.Module,
    config: PairXConfig,
    store: ArtifactStore | None = None,
    engine: PairX | None = None,
    progress: bool = True,
    run_name: str | None = None,
) -> list[MatchRecord]:
    """Explain the top ``config.top_k`` matches of each query; return every record, in order.

    records: the host's matches (``MatchRecord`` or mappings of its fields), any number of queries.
    images: id -> :class:`~pairx_plugin.images.LoadedImage` for every query and candidate id.
    model: the embedding model, left exactly as it was.
    config: settings (a ``PairXConfig`` or anything :func:`~pairx_plugin.config.load_config` reads).
    store: where artifacts go; default ``ArtifactStore(config.output_dir)``.
    engine: a ``PairX`` built with ``config.engine_kwargs()`` to reuse; default one built here.
    progress: show a progress bar.
    run_name: manifest name ``runs/<run_name>.jsonl``; default a name unique across processes.

    Raises only for problems of the whole call, before any work: records that are not records, a
    configuration error, no store, an invalid or already used run name, a device the model is not
    on, or an engine that cannot be built for the model (unknown layer, unsupported architecture).
    """
    from torch import nn

    config = config if isinstance(config, PairXConfig) else load_config(config)
    given = coerce_records(records)
    if not given:
        return []
    if not config.enabled:
        return [record.model_copy() for record in given]
    if not isinstance(images, ImageSource):
        raise InvalidInputError(f"images must have a load(image_id) -> LoadedImage method, got {type(images).__name__}")
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    from .artifacts.build import PairContext
    from .artifacts.store import ArtifactStore, check_run_name, new_run_name
    from .models import model_fingerprint

    if store is None:
        if config.output_dir is None:
            raise ConfigError(
                "pairx.output_dir: not set and no store was passed; set output_dir or pass store=ArtifactStore(dir)"
            )
        store = ArtifactStore(config.output_dir)
    run_name = check_run_name(run_name) if run_name is not None else new_run_name()
    device = resolve_device(config.device, model)
    if engine is None:
        from .engine.engine import PairX

        engine = PairX(model, **config.engine_kwargs())
    context = PairContext(config=config, config_digest=config.digest(), model_fingerprint=model_fingerprint(model))
    with store.open_run(run_name) as manifest:
        runner = _Run(
            context=context,
            images=images,
            engine=engine,
            store=store,
            device=device,
            layer_keys=list(engine.layer_keys),
            manifest=manifest,
        )
        return rerank_records(runner.run(given, progress=progress), config.rerank)  # H6: opt-in, docs/metrics.md


def default_run_name() -> str:
    """Kept for one release: :func:`pairx_plugin.artifacts.store.new_run_name`."""
    from .artifacts.store import new_run_name

    return new_run_name()


def _stage_of(exc: BaseException, default: str = "forward") -> str:
    stage = exc.stage if isinstance(exc, PairXError) else None
    return stage if stage in STAGES else default


def _culprit(exc: BaseException, size: int) -> int | None:
    """The chunk position of the one candidate a raised engine error names, from its declared fields."""
    if not isinstance(exc, PairXError) or exc.is_query or exc.candidate_index is None:
        return None
    return exc.candidate_index if 0 <= exc.candidate_index < size else None


@dataclass
class _Candidate:
    index: int  # position in the host's record list
    record: MatchRecord
    image: LoadedImage
    artifact_ids: list[str]


class _Run:
    """One call of the hook: plan → load → engine → record."""

    def __init__(
        self,
        *,
        context: PairContext,
        images: ImageSource,
        engine: PairX,
        store: ArtifactStore,
        device: torch.device,
        layer_keys: list[str],
        manifest: RunManifest,
    ) -> None:
        self.context = context
        self.images = images
        self.engine = engine
        self.store = store
        self.device = device
        self.layer_keys = layer_keys
        self.manifest = manifest
        self._image_cache: OrderedDict[str, LoadedImage | Exception] = OrderedDict()
        self._results: list[MatchRecord | None] = []
        self._bar: Any = None

    # ----- plan

    def run(self, records: list[MatchRecord], *, progress: bool) -> list[MatchRecord]:
        from tqdm.auto import tqdm

        self._results = [None] * len(records)
        groups: OrderedDict[str, list[int]] = OrderedDict()
        first_index: dict[tuple[str, str], int] = {}
        for index, record in enumerate(records):
            if record.pair in first_index:
                error = InvalidInputError(
                    f"duplicate record: (query_id, candidate_id) = {record.pair!r} already appears at index "
                    f"{first_index[record.pair]}; pass each pair once"
                )
                self._fail(index, record, error, "load")
                continue
            first_index[record.pair] = index
            if record.rank >= self.context.config.top_k:
                self._finish(index, record.model_copy(), "not_explained")
                continue
            groups.setdefault(record.query_id, []).append(index)
        total = sum(len(indices) for indices in groups.values())
        with tqdm(total=total, desc="PAIR-X", unit="pair", disable=not progress) as bar:
            self._bar = bar
            for query_id, indices in groups.items():
                self._run_query(query_id, [(i, records[i]) for i in indices])
        missing = [i for i, r in enumerate(self._results) if r is None]
        if missing:  # a bug, not an input problem: never hand back fewer records than given
            raise PairXError(f"internal error: records {missing} got no outcome")
        return [r for r in self._results if r is not None]

    # ----- record

    def _finish(self, index: int, record: MatchRecord, status: ManifestStatus) -> None:
        self._results[index] = record
        self.manifest.append(index, status, record)

    def _fail(self, index: int, record: MatchRecord, exc: BaseException, stage: str) -> None:
        logger.warning(
            "record %d (query %r, candidate %r) not explained at stage %s: %s: %s",
            index,
            record.query_id,
            record.candidate_id,
            stage,
            type(exc).__name__,
            _one_line(exc),
        )
        logger.debug("traceback of record %d's failure", index, exc_info=(type(exc), exc, exc.__traceback__))
        self._finish(index, record.with_error(ExplanationErrorInfo.from_exception(exc, stage)), "error")

    def _done(self, count: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(count)

    # ----- load

    def _load(self, image_id: str) -> LoadedImage:
        """The image for ``image_id`` (cached for the run, failures too); raises what the source raised."""
        if image_id in self._image_cache:
            self._image_cache.move_to_end(image_id)
            cached = self._image_cache[image_id]
        else:
            try:
                cached = as_loaded_image(self.images.load(image_id), image_id)
            except Exception as exc:  # noqa: BLE001 - any failure of the host's source costs only its records
                cached = exc
            self._image_cache[image_id] = cached
            if len(self._image_cache) > IMAGE_CACHE_SIZE:
                self._image_cache.popitem(last=False)
        if isinstance(cached, Exception):
            raise cached
        return cached

    def _run_query(self, query_id: str, items: list[tuple[int, MatchRecord]]) -> None:
        from .artifacts.build import cached_refs

        try:
            query = self._load(query_id)
        except Exception as exc:  # noqa: BLE001
            for index, record in items:
                self._fail(index, record, exc, "load")
            self._done(len(items))
            return
        query_sha = query.content_sha256()
        pending: list[_Candidate] = []
        for index, record in items:
            try:
                image = self._load(record.candidate_id)
            except Exception as exc:  # noqa: BLE001
                self._fail(index, record, exc, "load")
                self._done()
                continue
            candidate = _Candidate(index, record, image, self._artifact_ids(query_sha, image.content_sha256()))
            refs = cached_refs(self.store, candidate.artifact_ids)
            if refs is not None:
                self._finish(index, record.with_explanation(refs), "explained")
                self._done()
                continue
            pending.append(candidate)
        size = self.context.config.max_batch_images
        for start in range(0, len(pending), size):
            self._run_chunk(query, pending[start : start + size])

    def _artifact_ids(self, query_sha: str, candidate_sha: str) -> list[str]:
        from .artifacts.store import artifact_id

        return [
            artifact_id(
                model_fingerprint=self.context.model_fingerprint,
                layer=layer,
                config_digest=self.context.config_digest,
                query_sha256=query_sha,
                candidate_sha256=candidate_sha,
            )
            for layer in self.layer_keys
        ]

    # ----- engine

    def _run_chunk(self, query: LoadedImage, chunk: list[_Candidate]) -> None:
        """One engine call for ``chunk``; a raised error (the query failed) fails every record of it."""
        try:
            outcomes: Sequence[Any] = self.engine.explain_query(
                query.tensor.to(self.device),
                [candidate.image.tensor.to(self.device) for candidate in chunk],
                return_exceptions=True,
            )
        except Exception as exc:  # noqa: BLE001
            culprit = _culprit(exc, len(chunk))
            if culprit is not None:  # one candidate's input broke the shared call: fail it, redo the rest
                self._fail(chunk[culprit].index, chunk[culprit].record, exc, _stage_of(exc))
                self._done()
                rest = chunk[:culprit] + chunk[culprit + 1 :]
                if rest:
                    self._run_chunk(query, rest)
                return
            for candidate in chunk:
                self._fail(candidate.index, candidate.record, exc, _stage_of(exc))
            self._done(len(chunk))
            return
        if not isinstance(outcomes, (list, tuple)) or len(outcomes) != len(chunk):
            error = PairXError(
                f"engine returned {type(outcomes).__name__} for {len(chunk)} candidates; expected one result each"
            )
            for candidate in chunk:
                self._fail(candidate.index, candidate.record, error, "forward")
            self._done(len(chunk))
            return
        for candidate, outcome in zip(chunk, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                self._fail(candidate.index, candidate.record, outcome, _stage_of(outcome))
            else:
                self._record_pair(query, candidate, outcome)
            self._done()

    def _record_pair(self, query: LoadedImage, candidate: _Candidate, pair: Any) -> None:
        from .artifacts.build import PairFailure, store_pair

        outcome = store_pair(
            store=self.store,
            context=self.context,
            record=candidate.record,
            pair=pair,
            query=query,
            candidate=candidate.image,
            layer_keys=self.layer_keys,
            artifact_ids=candidate.artifact_ids,
        )
        if isinstance(outcome, PairFailure):
            self._fail(candidate.index, candidate.record, outcome.error, outcome.stage)
        else:
            self._finish(candidate.index, candidate.record.with_explanation(outcome), "explained")


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join((str(exc) or repr(exc)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = [
    "ImageSource",  # kept for one release: moved to pairx_plugin.images
    "LoadedImage",  # kept for one release: moved to pairx_plugin.images
    "coerce_records",  # kept for one release: moved to pairx_plugin.records
    "default_run_name",
    "explain_matches",
    "resolve_device",  # kept for one release: pairx_plugin.config.resolve_device
]
