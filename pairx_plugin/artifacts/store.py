"""A content-addressed artifact store on the file system, with one JSON Lines manifest per run.

Layout under ``root``::

    artifacts/<id[:2]>/<id>/explanation.json   the ExplanationArtifact document, written last
    artifacts/<id[:2]>/<id>/*.png              rendered panels and overlay layers
    artifacts/<id[:2]>/<id>/pair_data.npz      what every panel is drawn from (schema 1.2, compact.py)
    artifacts/<id[:2]>/<id>/arrays.npz         raw relevance arrays (keep_arrays only)
    images/<sha[:2]>/<sha>.png                 display images, once per content, shared by artifacts
    rendered/<id[:2]>/<id>/<role>.png          panels drawn on demand (a cache; safe to delete)
    runs/<run_name>.jsonl                      one ManifestEntry per record of that run

The artifact id hashes what determines the artifact's content (model fingerprint, layer, config
digest, both images' content hashes, schema version), never a host string, so re-running is
idempotent and an existing artifact is a cache hit. Every file goes to a hidden temporary name in its
final directory, is fsynced and then renamed into place; ``explanation.json`` comes last, so an
artifact is complete exactly when its JSON exists and every file it lists has the listed sha256
(:meth:`ArtifactStore.has`). A crash leaves at most complete-but-unlisted files, which the next
write replaces, and hidden temporary files named ``.<name>.<pid>.<random>.tmp``: opening a store
removes those whose writer process is gone (or that are older than a day), once per process and root.

Run manifests are created exclusively (``O_EXCL``): two runs can never share one, and a run name
that already has a manifest is an error before any work. :func:`new_run_name` gives names that are
unique across processes (UTC time to the microsecond, the pid and a random suffix).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, InvalidInputError
from ..records import SHA256_PATTERN, ExplanationRef, MatchRecord
from ..versions import ENGINE_VERSION
from .schema import (
    FILE_NAME_PATTERN,
    SCHEMA_VERSION,
    SHARED_PATH_PATTERN,
    ArtifactFile,
    ExplanationArtifact,
    ManifestEntry,
    ManifestStatus,
    MediaType,
    SharedFile,
)

logger = logging.getLogger(__name__)

JSON_NAME = "explanation.json"
ARRAYS_NAME = "arrays.npz"
_ID_PATTERN = re.compile(SHA256_PATTERN)
#: run names and artifact file names: plain file names, never paths (one pattern for both)
_RUN_NAME_PATTERN = re.compile(FILE_NAME_PATTERN)
_FILE_NAME_PATTERN = _RUN_NAME_PATTERN
_SHARED_PATH = re.compile(SHARED_PATH_PATTERN)
#: hidden temporary files of :func:`atomic_write`: ``.<final name>.<writer pid>.<random>.tmp``
_TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{12}\.tmp$")
_LEGACY_TEMP_PATTERN = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")  # before the pid was embedded
#: a temporary file older than this is swept even when its pid looks alive (pids get reused)
STALE_TEMP_SECONDS = 24 * 3600
LEGACY_TEMP_SECONDS = 3600


# --------------------------------------------------------------------------- fingerprints and ids


def fingerprint_state_dict(model_or_state: Any) -> str:
    """Kept for one release: the same function as :func:`pairx_plugin.models.model_fingerprint`.

    (It used to hash with another prefix and gave a different value from the fingerprint that artifact
    ids use; now there is one fingerprint.)
    """
    from ..models import model_fingerprint

    return model_fingerprint(model_or_state)


def model_fingerprint_for(model: Any) -> str:
    """Kept for one release: :func:`pairx_plugin.models.model_fingerprint`."""
    from ..models import model_fingerprint

    return model_fingerprint(model)


def new_run_name(prefix: str = "run") -> str:
    """A run name unique across threads and processes: ``<prefix>-<UTC time to the µs>Z-p<pid>-<random>``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return check_run_name(f"{prefix}-{stamp}-p{os.getpid()}-{uuid.uuid4().hex[:6]}")


def artifact_id(
    *,
    model_fingerprint: str,
    layer: str,
    config_digest: str,
    query_sha256: str,
    candidate_sha256: str,
    schema_version: str = SCHEMA_VERSION,
    engine_version: str = ENGINE_VERSION,
) -> str:
    """The content address of one explained pair at one layer (sha256 hex).

    The engine version is part of it, so an engine that computes different numbers never
    reuses artifacts written by an older one.
    """
    parts = [schema_version, engine_version, model_fingerprint, layer, config_digest, query_sha256, candidate_sha256]
    canonical = json.dumps(parts, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(b"pairx-artifact-id\0" + canonical.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- atomic writes


def _write_bytes(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (separate so tests can simulate a full disk)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be fsynced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a hidden temporary file in the same directory, fsync, rename.

    Raises :class:`ArtifactError` naming ``path`` when anything fails; no temporary file is left.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_bytes(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
            raise ArtifactError(
                f"cannot write {str(path)!r}: {reason}; free disk space or choose a writable output_dir"
            ) from exc
        raise


def _process_is_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's process) or cannot tell: keep the file
    return True


def sweep_temporary_files(root: Path, *, now: float | None = None) -> list[Path]:
    """Remove the hidden ``atomic_write`` temporary files under ``root`` whose writer is gone.

    A file is removed when the pid in its name is not a live process, or when it is older than
    :data:`STALE_TEMP_SECONDS` (a pid may have been reused). Returns the removed paths.
    """
    now = time.time() if now is None else now
    removed: list[Path] = []
    for top in (root / "artifacts", root / "runs", root / "images", root / "rendered"):
        if not top.is_dir():
            continue
        for directory, _, names in os.walk(top):
            for name in names:
                if not name.endswith(".tmp") or not name.startswith("."):
                    continue
                path = Path(directory) / name
                match = _TEMP_PATTERN.match(name)
                if match is None and not _LEGACY_TEMP_PATTERN.match(name):
                    continue
                try:
                    age = now - path.stat().st_mtime
                except OSError:
                    continue
                if match is not None:
                    gone = age > STALE_TEMP_SECONDS or not _process_is_alive(int(match.group("pid")))
                else:  # no pid in the name: only age tells
                    gone = age > LEGACY_TEMP_SECONDS
                if gone:
                    with contextlib.suppress(OSError):
                        path.unlink()
                        removed.append(path)
    if removed:
        logger.info("removed %d temporary file(s) of interrupted writers under %s", len(removed), root)
    return removed


_SWEPT_ROOTS: set[str] = set()
_SWEEP_LOCK = threading.Lock()


def _sweep_once(root: Path) -> None:
    """Sweep ``root`` the first time this process opens a store there (a large store costs a walk)."""
    key = os.path.realpath(root)
    with _SWEEP_LOCK:
        if key in _SWEPT_ROOTS:
            return
        _SWEPT_ROOTS.add(key)
    sweep_temporary_files(root)


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class ArtifactBlob:
    """A file to store with an artifact, before hashing."""

    name: str
    role: str
    media_type: MediaType
    data: bytes
    width: int | None = None
    height: int | None = None


def arrays_blob(arrays: Mapping[str, np.ndarray]) -> ArtifactBlob:
    """``arrays.npz`` (compressed) holding ``arrays``."""
    buffer = io.BytesIO()
    named: dict[str, Any] = {key: np.asarray(value) for key, value in arrays.items()}
    np.savez_compressed(buffer, **named)
    return ArtifactBlob(ARRAYS_NAME, "arrays", "application/x-npz", buffer.getvalue())


class ArtifactStore:
    """Content-addressed explanation artifacts under ``root`` (created on first write)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        #: (image content sha256, display size) -> its shared display file, so a run encodes each image once
        self._shared_cache: dict[tuple[str, int, int], SharedFile] = {}
        if self.root.exists() and not self.root.is_dir():
            raise ArtifactError(
                f"artifact store root {str(self.root)!r} exists and is not a directory; choose another output_dir"
            )
        if self.root.is_dir():
            _sweep_once(self.root)

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r})"

    # ----- paths

    def artifact_dir(self, artifact_id: str) -> Path:
        if not isinstance(artifact_id, str) or not _ID_PATTERN.match(artifact_id):
            raise InvalidInputError(f"artifact id {artifact_id!r} is not a 64-character lowercase sha256 hex string")
        return self.root / "artifacts" / artifact_id[:2] / artifact_id

    def json_path(self, artifact_id: str) -> Path:
        return self.artifact_dir(artifact_id) / JSON_NAME

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def shared_path(self, shared: SharedFile | str) -> Path:
        relative = shared.path if isinstance(shared, SharedFile) else shared
        if not _SHARED_PATH.match(relative):
            raise InvalidInputError(f"shared file path {relative!r} is not images/<sha[:2]>/<sha>.png")
        return self.root / relative

    def manifest_path(self, run_name: str) -> Path:
        check_run_name(run_name)
        return self.root / "runs" / f"{run_name}.jsonl"

    # ----- reading

    def has(self, artifact_id: str) -> bool:
        """True when the artifact is complete: its JSON is valid and every listed file matches its sha256."""
        try:
            artifact = self.load(artifact_id)
        except ArtifactError:
            return False
        return not self.problems(artifact)

    def problems(self, artifact: ExplanationArtifact, *, hash_shared: bool = False) -> list[str]:
        """What is wrong with the files of a loaded artifact (empty when complete).

        Own files are hashed; shared display images (one per image, large) are checked for existence
        and size, and hashed too with ``hash_shared`` (``pairx-plugin store verify`` does).
        """
        directory = self.artifact_dir(artifact.artifact_id)
        found = []
        for side in ("query", "candidate"):
            shared = getattr(artifact, side).display_file
            if shared is None:
                continue
            path = self.shared_path(shared)
            try:
                if hash_shared:
                    data = path.read_bytes()
                    size, digest = len(data), hashlib.sha256(data).hexdigest()
                else:
                    size, digest = path.stat().st_size, shared.sha256
            except OSError as exc:
                found.append(f"{shared.path}: {exc.strerror or exc}")
                continue
            if size != shared.size_bytes or digest != shared.sha256:
                found.append(
                    f"{shared.path}: content ({size} bytes, sha256 {digest}) differs from the listed "
                    f"{shared.size_bytes} bytes, sha256 {shared.sha256}"
                )
        for entry in artifact.files:
            path = directory / entry.name
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as exc:
                found.append(f"{entry.name}: {exc.strerror or exc}")
                continue
            if digest != entry.sha256:
                found.append(f"{entry.name}: sha256 {digest} differs from the listed {entry.sha256}")
        return found

    def load(self, artifact_id: str) -> ExplanationArtifact:
        """The artifact document; :class:`ArtifactError` when missing or not a valid document."""
        path = self.json_path(artifact_id)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ArtifactError(f"cannot read artifact {str(path)!r}: {exc.strerror or exc}") from exc
        try:
            artifact = ExplanationArtifact.model_validate_json(text)
        except ValueError as exc:
            raise ArtifactError(f"artifact {str(path)!r} is not a valid explanation document: {exc}") from exc
        if artifact.artifact_id != artifact_id:
            raise ArtifactError(f"artifact {str(path)!r} names id {artifact.artifact_id}, not {artifact_id}")
        return artifact

    def artifact_ids(self) -> Iterator[str]:
        """Ids of every directory that holds an explanation.json (complete or not; check with has())."""
        base = self.root / "artifacts"
        if not base.is_dir():
            return
        for path in sorted(base.glob(f"??/*/{JSON_NAME}")):
            if _ID_PATTERN.match(path.parent.name):
                yield path.parent.name

    def ref(self, artifact: ExplanationArtifact, *, cache_hit: bool = False) -> ExplanationRef:
        """The reference a record carries: paths relative to the store root."""
        directory = self.artifact_dir(artifact.artifact_id)
        images = {f.role: self.relative(directory / f.name) for f in artifact.files if f.media_type == "image/png"}
        for side in ("query", "candidate"):  # 1.1: the shared display images stand in for display_* panels
            shared = getattr(artifact, side).display_file
            if shared is not None:
                images.setdefault(f"display_{side}", shared.path)
        return ExplanationRef(
            artifact_id=artifact.artifact_id,
            layer=artifact.layer,
            json_path=self.relative(directory / JSON_NAME),
            images=images,
            metrics=artifact.metrics,
            cosine=artifact.cosine,
            cache_hit=cache_hit,
        )

    def read_shared_image(self, shared: SharedFile) -> np.ndarray:
        """A shared display image as HxWx3 uint8 RGB; :class:`ArtifactError` when missing or unreadable."""
        from PIL import Image

        path = self.shared_path(shared)
        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"), dtype=np.uint8)
        except Exception as exc:
            raise ArtifactError(
                f"cannot read shared image {str(path)!r} ({exc}); re-run the records that use it "
                "(pairx-plugin store verify lists them)"
            ) from exc

    def shared_paths(self) -> Iterator[Path]:
        """Every file under ``images/`` that looks like a shared file (for gc and verify)."""
        base = self.root / "images"
        if base.is_dir():
            for path in sorted(base.glob("??/*.png")):
                if _SHARED_PATH.match(self.relative(path)):
                    yield path

    # ----- writing

    def put_shared_image(self, content_sha256: str, display: np.ndarray) -> SharedFile:
        """Store ``display`` (HxWx3 uint8) once as ``images/<sha[:2]>/<sha>.png`` (sha of the PNG bytes).

        Idempotent: a file that already exists with the same bytes is kept. Within one store object the
        encoded result is remembered per (content hash, size), so each image is encoded once per run.
        """
        key = (content_sha256, int(display.shape[0]), int(display.shape[1]))
        cached = self._shared_cache.get(key)
        if cached is not None and self.shared_path(cached).is_file():
            return cached
        from PIL import Image

        from .render import encode_png

        data = encode_png(Image.fromarray(np.ascontiguousarray(display)))
        digest = hashlib.sha256(data).hexdigest()
        shared = SharedFile(
            path=f"images/{digest[:2]}/{digest}.png",
            sha256=digest,
            size_bytes=len(data),
            width=int(display.shape[1]),
            height=int(display.shape[0]),
        )
        path = self.shared_path(shared)
        try:
            present = path.stat().st_size == len(data)
        except OSError:
            present = False
        if not present:
            atomic_write(path, data)
        if len(self._shared_cache) >= 4096:
            self._shared_cache.clear()
        self._shared_cache[key] = shared
        return shared

    def write(self, artifact: ExplanationArtifact, blobs: list[ArtifactBlob]) -> ExplanationArtifact:
        """Store ``blobs`` and then the document (with ``files`` filled in from the blobs); returns it.

        On failure the files written by this call are removed again and :class:`ArtifactError` names
        the path that failed; an earlier complete artifact with the same id is never touched because
        callers only write ids that :meth:`has` says are missing.
        """
        directory = self.artifact_dir(artifact.artifact_id)
        names = [blob.name for blob in blobs]
        for name in names:
            if not _FILE_NAME_PATTERN.match(name) or name == JSON_NAME:
                raise InvalidInputError(
                    f"artifact file name {name!r} is not allowed; use [A-Za-z0-9_.-], not {JSON_NAME}"
                )
        if len(set(names)) != len(names):
            raise InvalidInputError(f"artifact file names repeat: {sorted(names)}; give each file its own name")
        files = [
            ArtifactFile(
                name=blob.name,
                role=blob.role,
                media_type=blob.media_type,
                sha256=hashlib.sha256(blob.data).hexdigest(),
                size_bytes=len(blob.data),
                width=blob.width,
                height=blob.height,
            )
            for blob in blobs
        ]
        document = artifact.model_copy(update={"files": files})
        written: list[Path] = []
        try:
            for blob in blobs:
                atomic_write(directory / blob.name, blob.data)
                written.append(directory / blob.name)
            atomic_write(directory / JSON_NAME, _json_bytes(document))
        except BaseException:
            for path in written:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        _fsync_directory(directory)
        return document

    @contextlib.contextmanager
    def open_run(self, run_name: str) -> Iterator[RunManifest]:
        """The manifest of one run (``runs/<run_name>.jsonl``, created exclusively), closed on exit.

        :class:`ArtifactError` when a manifest of that name exists already (another run, maybe
        running now, owns it): choose another run name, or :meth:`remove_run` the old one first.
        """
        manifest = RunManifest(self.manifest_path(run_name), run_name)
        try:
            yield manifest
        finally:
            manifest.close()

    def remove_run(self, run_name: str) -> bool:
        """Delete the manifest of ``run_name`` (to reuse the name); True when there was one."""
        try:
            self.manifest_path(run_name).unlink()
        except FileNotFoundError:
            return False
        return True


def _json_bytes(document: ExplanationArtifact) -> bytes:
    payload = document.model_dump(mode="json")
    return (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def check_run_name(run_name: str) -> str:
    if not isinstance(run_name, str) or not _RUN_NAME_PATTERN.match(run_name):
        raise InvalidInputError(
            f"run name {run_name!r} is not a safe file name; use 1-100 characters from [A-Za-z0-9_.-], "
            "starting with a letter or digit"
        )
    return run_name


class RunManifest:
    """Appends one :class:`ManifestEntry` per record to a JSON Lines file, flushed and fsynced per line.

    A manifest that cannot be written does not stop the run: the failure is warned once and kept in
    ``error``; the records still carry their outcomes.
    """

    def __init__(self, path: Path, run_name: str) -> None:
        self.path = path
        self.run_name = run_name
        self.error: ArtifactError | None = None
        self.lines_written = 0
        self._fd: int | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._fail(exc)
            return
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise ArtifactError(
                f"run manifest {str(path)!r} already exists: another run (maybe running now) has the name "
                f"{run_name!r}; choose another run name, or leave it unset for a unique one"
            ) from None
        except OSError as exc:
            self._fail(exc)
            return
        self._fd = fd

    def _fail(self, exc: OSError) -> None:
        if self.error is None:
            self.error = ArtifactError(
                f"cannot write run manifest {str(self.path)!r}: {exc.strerror or exc}; "
                "free disk space or choose a writable output_dir"
            )
            warnings.warn(str(self.error), RuntimeWarning, stacklevel=3)

    def append(self, index: int, status: ManifestStatus, record: MatchRecord) -> None:
        """Write one line with one ``write`` call and fsync it, so a killed run leaves whole lines only."""
        if self._fd is None:
            return
        entry = ManifestEntry(
            schema_version=SCHEMA_VERSION, run_name=self.run_name, index=index, status=status, record=record
        )
        try:
            _write_bytes(self._fd, (entry.model_dump_json() + "\n").encode("utf-8"))
            os.fsync(self._fd)
            self.lines_written += 1
        except OSError as exc:
            self._fail(exc)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestEntry]:
    """Every entry of a run manifest, validated."""
    entries = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                entries.append(ManifestEntry.model_validate_json(line))
            except ValueError as exc:
                raise ArtifactError(f"{str(path)!r} line {number} is not a manifest entry: {exc}") from exc
    return entries


__all__ = [
    "ARRAYS_NAME",
    "JSON_NAME",
    "ArtifactBlob",
    "ArtifactStore",
    "RunManifest",
    "arrays_blob",
    "artifact_id",
    "atomic_write",
    "check_run_name",
    "fingerprint_state_dict",
    "model_fingerprint_for",
    "new_run_name",
    "read_manifest",
    "sweep_temporary_files",
]
