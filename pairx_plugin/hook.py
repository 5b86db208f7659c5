"""The post-matching hook: records in, the same records out, each with an explanation or an error.

The hook is declared once as a typed, keyword-only specification (:data:`EXPLAIN_MATCHES`, in the
manner of pluggy's hookspecs). :data:`hooks` is its registry: an implementation is checked against
the specification when it is registered, so a wrong one fails at registration rather than in the
middle of a host's run. The project's own implementation, :func:`explain_matches`, is registered by
default; hosts and adapters call ``hooks.call(records=..., images=..., ...)`` or
``explain_matches(...)`` directly, always with keywords.

What :func:`explain_matches` guarantees:

* every record comes back, in the same order, with the host's score and rank unchanged, as a new
  object (inputs are never mutated);
* records are grouped by query, so each query image is loaded and forwarded once with all of its
  candidates (split into chunks of ``max_batch_images``); a chunk that runs out of CUDA memory is
  retried in halves down to one candidate before its records get the error;
* a failure costs only the record(s) it concerns: a query image that cannot be loaded fails that
  query's records, a candidate image or a pair failing in the engine, renderer or store fails that
  record, with ``explanation_error.stage`` saying where;
* records with ``rank >= top_k`` are returned unchanged (copies) with no explanation and no error,
  and appear in the manifest as ``not_explained``; the second and later records with the same
  ``(query_id, candidate_id)`` get an ``InvalidInputError`` at stage ``load``;
* an artifact that already exists in the store (same content address) is a cache hit: no engine work,
  ``explanation.cache_hit`` is true.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from .config import PairXConfig, load_config
from .errors import ArtifactError, ConfigError, InvalidInputError, PairXError
from .evidence.rerank import rerank_records
from .records import STAGES, ExplanationErrorInfo, ExplanationRef, MatchRecord

if TYPE_CHECKING:  # imported lazily at run time: the engine and the store pull in heavier modules
    from .artifacts.store import ArtifactStore
    from .engine.engine import PairX


# --------------------------------------------------------------------------- images


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
            raise InvalidInputError(f"LoadedImage.tensor must be a (1, 3, H, W) tensor, got {shape}; add the batch dim with unsqueeze(0)")
        if not tensor.is_floating_point():
            raise InvalidInputError(f"LoadedImage.tensor must be a float tensor, got {tensor.dtype}; normalise the image first")
        if not isinstance(display, np.ndarray) or display.ndim != 3 or display.shape[2] != 3 or display.dtype != np.uint8:
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
        digest.update(f"{self.sha256 or ''}\0".encode("utf-8"))
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


# --------------------------------------------------------------------------- hook specification


@dataclass(frozen=True)
class HookSpec:
    """A declared hook: name, keyword-only signature and docstring, taken from a specification function."""

    name: str
    signature: inspect.Signature
    doc: str
    check_result: Callable[[Mapping[str, Any], Any], None] | None = None

    @classmethod
    def from_function(cls, function: Callable[..., Any], check_result: Callable[..., None] | None = None) -> HookSpec:
        signature = inspect.signature(function)
        for parameter in signature.parameters.values():
            if parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(f"hook spec {function.__name__}: parameter {parameter.name!r} must be keyword-only")
        name = function.__name__.removeprefix("_").removesuffix("_spec")
        return cls(name=name, signature=signature, doc=inspect.getdoc(function) or "", check_result=check_result)

    @property
    def argument_names(self) -> tuple[str, ...]:
        return tuple(self.signature.parameters)

    def check_implementation(self, implementation: Callable[..., Any]) -> inspect.Signature:
        """The implementation's signature; :class:`InvalidInputError` when it cannot serve this hook."""
        label = getattr(implementation, "__qualname__", repr(implementation))
        if not callable(implementation):
            raise InvalidInputError(f"hook {self.name}: implementation {label} is not callable")
        try:
            signature = inspect.signature(implementation)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"hook {self.name}: cannot read the signature of {label} ({exc})") from exc
        declared = self.argument_names
        for parameter in signature.parameters.values():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                continue
            if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                raise InvalidInputError(
                    f"hook {self.name}: implementation {label} takes *{parameter.name}; hooks are called with "
                    f"keywords only, declare the arguments you need from {list(declared)}"
                )
            if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
                raise InvalidInputError(
                    f"hook {self.name}: implementation {label} has positional-only argument {parameter.name!r}; "
                    "hooks are called with keywords only"
                )
            if parameter.name not in declared:
                raise InvalidInputError(
                    f"hook {self.name}: implementation {label} takes argument {parameter.name!r}, which the "
                    f"specification does not declare; use only {list(declared)}"
                )
        return signature

    def bind(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """All declared arguments: ``kwargs`` checked against the specification, defaults filled in."""
        unknown = sorted(set(kwargs) - set(self.argument_names))
        if unknown:
            raise InvalidInputError(f"hook {self.name}: unknown arguments {unknown}; declared: {list(self.argument_names)}")
        bound: dict[str, Any] = {}
        for name, parameter in self.signature.parameters.items():
            if name in kwargs:
                bound[name] = kwargs[name]
            elif parameter.default is inspect.Parameter.empty:
                raise InvalidInputError(f"hook {self.name}: missing required argument {name!r}")
            else:
                bound[name] = parameter.default
        return bound


@dataclass
class HookRegistry:
    """Implementations of one :class:`HookSpec`; the most recently registered one answers calls."""

    spec: HookSpec
    _implementations: list[tuple[str, Callable[..., Any], inspect.Signature]] = field(default_factory=list)

    def register(self, implementation: Callable[..., Any], name: str | None = None) -> Callable[..., Any]:
        """Add ``implementation`` (checked now); usable as a decorator. Returns it unchanged."""
        signature = self.spec.check_implementation(implementation)
        label = name or getattr(implementation, "__name__", repr(implementation))
        if any(existing == label for existing, _, _ in self._implementations):
            raise InvalidInputError(f"hook {self.spec.name}: an implementation named {label!r} is already registered")
        self._implementations.append((label, implementation, signature))
        return implementation

    def unregister(self, name_or_implementation: str | Callable[..., Any]) -> None:
        before = len(self._implementations)
        self._implementations = [
            item for item in self._implementations if name_or_implementation not in (item[0], item[1])
        ]
        if len(self._implementations) == before:
            raise InvalidInputError(f"hook {self.spec.name}: {name_or_implementation!r} is not registered")

    @property
    def names(self) -> list[str]:
        return [label for label, _, _ in self._implementations]

    @contextlib.contextmanager
    def registered(self, implementation: Callable[..., Any], name: str | None = None):
        """Register ``implementation`` for the duration of a ``with`` block."""
        self.register(implementation, name)
        try:
            yield implementation
        finally:
            self.unregister(implementation)

    def call(self, **kwargs: Any) -> Any:
        if not self._implementations:
            raise PairXError(f"hook {self.spec.name}: no implementation is registered")
        bound = self.spec.bind(kwargs)
        _, implementation, signature = self._implementations[-1]
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
        arguments = bound if takes_any else {k: v for k, v in bound.items() if k in signature.parameters}
        result = implementation(**arguments)
        if self.spec.check_result is not None:
            self.spec.check_result(bound, result)
        return result


def _explain_matches_spec(
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
    images: id -> :class:`LoadedImage` for every query and candidate id.
    model: the embedding model, left exactly as it was.
    config: settings (a ``PairXConfig`` or anything :func:`load_config` reads).
    store: where artifacts go; default ``ArtifactStore(config.output_dir)``.
    engine: a ``PairX`` built with ``config.engine_kwargs()`` to reuse; default one built here.
    progress: show a progress bar.
    run_name: manifest name ``runs/<run_name>.jsonl``; default a UTC timestamp.
    """
    raise NotImplementedError  # a specification only


def _check_explain_matches_result(arguments: Mapping[str, Any], result: Any) -> None:
    records = arguments["records"]
    if not isinstance(result, list) or len(result) != len(records):
        raise PairXError(
            f"hook explain_matches: the implementation returned {type(result).__name__} "
            f"of length {len(result) if hasattr(result, '__len__') else '?'}, expected a list of {len(records)} records"
        )
    for index, (given, returned) in enumerate(zip(records, result)):
        given = given if isinstance(given, MatchRecord) else MatchRecord.model_validate(given)
        if not isinstance(returned, MatchRecord) or returned.pair != given.pair or returned.rank != given.rank or not _same_score(
            returned.score, given.score
        ):
            raise PairXError(
                f"hook explain_matches: record {index} came back changed or reordered; an implementation must "
                "return every record in order with its ids, rank and score unchanged"
            )


def _same_score(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


EXPLAIN_MATCHES = HookSpec.from_function(_explain_matches_spec, check_result=_check_explain_matches_result)


# --------------------------------------------------------------------------- the runner


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
    """The project's implementation of the ``explain_matches`` hook (see the module docstring).

    Raises only for problems of the whole call, before any work: records that are not records, a
    configuration error, no store, an invalid run name, a device the model is not on, or an engine
    that cannot be built for the model (unknown layer, unsupported architecture).
    """
    config = config if isinstance(config, PairXConfig) else load_config(config)
    given = coerce_records(records)
    if not given:
        return []
    if not config.enabled:
        return [record.model_copy() for record in given]
    if not isinstance(images, ImageSource):
        raise InvalidInputError(
            f"images must have a load(image_id) -> LoadedImage method, got {type(images).__name__}"
        )
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    from .artifacts.store import ArtifactStore, check_run_name, model_fingerprint_for

    if store is None:
        if config.output_dir is None:
            raise ConfigError("pairx.output_dir: not set and no store was passed; set output_dir or pass store=ArtifactStore(dir)")
        store = ArtifactStore(config.output_dir)
    run_name = check_run_name(run_name) if run_name is not None else default_run_name()
    device = resolve_device(config.device, model)
    if engine is None:
        from .engine.engine import PairX

        engine = PairX(model, **config.engine_kwargs())
    runner = _Run(
        config=config,
        images=images,
        engine=engine,
        store=store,
        device=device,
        model_fingerprint=model_fingerprint_for(model),
        layer_keys=list(engine.layer_keys),
    )
    return rerank_records(runner.run(given, run_name=run_name, progress=progress), config.rerank)  # opt-in


hooks = HookRegistry(EXPLAIN_MATCHES)
hooks.register(explain_matches, name="pairx_plugin")


def coerce_records(records: Any) -> list[MatchRecord]:
    """``records`` as a list of ``MatchRecord``; :class:`InvalidInputError` naming the first bad one."""
    if isinstance(records, (str, bytes, Mapping, MatchRecord)) or not hasattr(records, "__iter__"):
        raise InvalidInputError(f"records must be a sequence of MatchRecord, got {type(records).__name__}")
    result = []
    for index, record in enumerate(records):
        if isinstance(record, MatchRecord):
            result.append(record)
            continue
        if not isinstance(record, Mapping):
            raise InvalidInputError(f"records[{index}] must be a MatchRecord or a mapping of its fields, got {type(record).__name__}")
        try:
            result.append(MatchRecord.model_validate(record))
        except ValueError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<record>'}: {err['msg']}" for err in exc.errors()  # type: ignore[attr-defined]
            ) if hasattr(exc, "errors") else str(exc)
            raise InvalidInputError(f"records[{index}] is not a valid MatchRecord: {problems}") from None
    return result


def default_run_name() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"run-{stamp}"


def resolve_device(device: str, model: nn.Module) -> torch.device:
    """The device inputs go to: the model's own ("auto"), or the configured one if the model is on it."""
    parameter = next(iter(model.parameters()), None)
    model_device = parameter.device if parameter is not None else torch.device("cpu")
    if device == "auto":
        return model_device
    wanted = torch.device(device)
    if wanted.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"pairx.device: {device!r} but CUDA is not available here; use device: auto or cpu")
    same = wanted.type == model_device.type and (wanted.index is None or wanted.index == model_device.index)
    if not same:
        raise ConfigError(
            f"pairx.device: {device!r} but the model is on {model_device}; PAIR-X never moves the model, "
            f"so move it first (model.to({device!r})) or set device: auto"
        )
    return model_device


def _stage_of(exc: BaseException, default: str = "forward") -> str:
    stage = getattr(exc, "stage", None)
    return stage if stage in STAGES else default


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError)


@dataclass
class _Candidate:
    index: int  # position in the host's record list
    record: MatchRecord
    image: LoadedImage
    artifact_ids: list[str]


class _Run:
    """One call of the hook: loads images, runs the engine per query chunk, renders and stores."""

    IMAGE_CACHE_SIZE = 64

    def __init__(
        self,
        *,
        config: PairXConfig,
        images: ImageSource,
        engine: Any,
        store: ArtifactStore,
        device: torch.device,
        model_fingerprint: str,
        layer_keys: list[str],
    ) -> None:
        self.config: PairXConfig = config
        self.images: ImageSource = images
        self.engine = engine
        self.store = store
        self.device: torch.device = device
        self.model_fingerprint: str = model_fingerprint
        self.layer_keys: list[str] = layer_keys
        self.config_digest = config.digest()
        self._image_cache: OrderedDict[str, LoadedImage | BaseException] = OrderedDict()
        self._results: list[MatchRecord | None] = []
        self._manifest = None
        self._bar = None

    # ----- the whole run

    def run(self, records: list[MatchRecord], *, run_name: str, progress: bool) -> list[MatchRecord]:
        from tqdm.auto import tqdm

        self._results = [None] * len(records)
        groups: OrderedDict[str, list[int]] = OrderedDict()
        first_index: dict[tuple[str, str], int] = {}
        with self.store.open_run(run_name) as manifest:
            self._manifest = manifest
            for index, record in enumerate(records):
                if record.pair in first_index:
                    error = InvalidInputError(
                        f"duplicate record: (query_id, candidate_id) = {record.pair!r} already appears at index "
                        f"{first_index[record.pair]}; pass each pair once"
                    )
                    self._fail(index, record, error, "load")
                    continue
                first_index[record.pair] = index
                if record.rank >= self.config.top_k:
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
        return list(self._results)  # type: ignore[arg-type]

    def _finish(self, index: int, record: MatchRecord, status: str) -> None:
        self._results[index] = record
        if self._manifest is not None:
            self._manifest.append(index, status, record)

    def _fail(self, index: int, record: MatchRecord, exc: BaseException, stage: str) -> None:
        self._finish(index, record.with_error(ExplanationErrorInfo.from_exception(exc, stage)), "error")

    def _done(self, count: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(count)

    # ----- images

    def _load(self, image_id: str) -> LoadedImage:
        """The image for ``image_id`` (cached for the run, failures too); raises what the source raised."""
        if image_id in self._image_cache:
            self._image_cache.move_to_end(image_id)
            cached = self._image_cache[image_id]
        else:
            try:
                cached = _as_loaded_image(self.images.load(image_id), image_id)
            except Exception as exc:  # noqa: BLE001 - any failure of the host's source costs only its records
                cached = exc
            self._image_cache[image_id] = cached
            if len(self._image_cache) > self.IMAGE_CACHE_SIZE:
                self._image_cache.popitem(last=False)
        if isinstance(cached, BaseException):
            raise cached
        return cached

    # ----- one query

    def _run_query(self, query_id: str, items: list[tuple[int, MatchRecord]]) -> None:
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
            refs = self._cached_refs(candidate.artifact_ids)
            if refs is not None:
                self._finish(index, record.with_explanation(refs), "explained")
                self._done()
                continue
            pending.append(candidate)
        size = self.config.max_batch_images
        for start in range(0, len(pending), size):
            self._run_chunk(query, pending[start:start + size])

    def _artifact_ids(self, query_sha: str, candidate_sha: str) -> list[str]:
        from .artifacts.store import artifact_id

        return [
            artifact_id(
                model_fingerprint=self.model_fingerprint,
                layer=layer,
                config_digest=self.config_digest,
                query_sha256=query_sha,
                candidate_sha256=candidate_sha,
            )
            for layer in self.layer_keys
        ]

    def _cached_refs(self, ids: list[str]) -> list[ExplanationRef] | None:
        refs = []
        for identifier in ids:
            try:
                artifact = self.store.load(identifier)
            except ArtifactError:
                return None
            if self.store.problems(artifact):
                return None
            refs.append(self.store.ref(artifact, cache_hit=True))
        return refs

    def _run_chunk(self, query: LoadedImage, chunk: list[_Candidate]) -> None:
        """One engine call for ``chunk``; out of memory splits it in halves down to single pairs."""
        try:
            outcomes = self.engine.explain_query(
                query.tensor.to(self.device),
                [candidate.image.tensor.to(self.device) for candidate in chunk],
                return_exceptions=True,
            )
        except Exception as exc:  # noqa: BLE001
            if _is_out_of_memory(exc) and len(chunk) > 1:
                _release_cuda_memory()
                half = len(chunk) // 2
                self._run_chunk(query, chunk[:half])
                self._run_chunk(query, chunk[half:])
                return
            for candidate in chunk:
                self._fail(candidate.index, candidate.record, _explain_oom(exc), _stage_of(exc))
            self._done(len(chunk))
            return
        if not isinstance(outcomes, (list, tuple)) or len(outcomes) != len(chunk):
            error = PairXError(f"engine returned {type(outcomes).__name__} for {len(chunk)} candidates; expected one result each")
            for candidate in chunk:
                self._fail(candidate.index, candidate.record, error, "forward")
            self._done(len(chunk))
            return
        retry = []
        for candidate, outcome in zip(chunk, outcomes):
            if isinstance(outcome, BaseException):
                if _is_out_of_memory(outcome) and len(chunk) > 1:
                    retry.append(candidate)
                    continue
                self._fail(candidate.index, candidate.record, _explain_oom(outcome), _stage_of(outcome))
            else:
                self._store_pair(query, candidate, outcome)
            self._done()
        if retry:
            _release_cuda_memory()
            half = max(1, len(retry) // 2)
            self._run_chunk(query, retry[:half])
            if retry[half:]:
                self._run_chunk(query, retry[half:])

    # ----- one pair

    def _store_pair(self, query: LoadedImage, candidate: _Candidate, pair: Any) -> None:
        from .artifacts.render import render_pair

        refs = []
        for layer_key, identifier in zip(self.layer_keys, candidate.artifact_ids):
            layer = pair.layers.get(layer_key) if hasattr(pair, "layers") else None
            if layer is None:
                error = PairXError(f"the engine's result has no layer {layer_key!r}; it has {sorted(getattr(pair, 'layers', {}))}")
                self._fail(candidate.index, candidate.record, error, "relevance")
                return
            existing = self._cached_refs([identifier])  # an identical pair earlier in this run
            if existing is not None:
                refs.extend(existing)
                continue
            try:
                rendered = render_pair(
                    query.display,
                    candidate.image.display,
                    layer,
                    pair.query_size,
                    pair.candidate_size,
                    k_lines=self.config.k_lines,
                    panels=set(self.config.render),
                )
            except Exception as exc:  # noqa: BLE001
                self._fail(candidate.index, candidate.record, exc, "render")
                return
            try:
                from .artifacts.schema import build_artifact
                from .evidence.attach import attach_evidence

                document, blobs = build_artifact(
                    artifact_id=identifier,
                    record=candidate.record,
                    pair=pair,
                    layer=layer,
                    query=query,
                    candidate=candidate.image,
                    rendered=rendered,
                    config=self.config,
                    config_digest=self.config_digest,
                    model_fingerprint=self.model_fingerprint,
                )
                document = attach_evidence(document, pair, layer_key, query, candidate.image)  # H6: docs/metrics.md
                document = self.store.write(document, blobs)
            except Exception as exc:  # noqa: BLE001
                self._fail(candidate.index, candidate.record, exc, "store")
                return
            refs.append(self.store.ref(document))
        self._finish(candidate.index, candidate.record.with_explanation(refs), "explained")


def _as_loaded_image(value: Any, image_id: str) -> LoadedImage:
    if isinstance(value, LoadedImage):
        return value
    if hasattr(value, "tensor") and hasattr(value, "display"):  # a compatible type from elsewhere
        return LoadedImage(tensor=value.tensor, display=value.display, sha256=getattr(value, "sha256", None),
                           foreground=getattr(value, "foreground", None))
    raise InvalidInputError(
        f"the image source returned {type(value).__name__} for id {image_id!r}; it must return a LoadedImage"
    )


def _explain_oom(exc: BaseException) -> BaseException:
    if not _is_out_of_memory(exc):
        return exc
    return type(exc)(
        f"out of memory explaining one pair even alone ({exc}); use a smaller input size, fewer layers, "
        "or device: cpu"
    )


def _release_cuda_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = [
    "EXPLAIN_MATCHES",
    "HookRegistry",
    "HookSpec",
    "ImageSource",
    "LoadedImage",
    "coerce_records",
    "explain_matches",
    "hooks",
    "resolve_device",
]
