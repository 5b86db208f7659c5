"""Store maintenance: verify that every run's files are intact, and collect files no run references.

``verify_store``: every manifest line parses; every artifact a line references (its ``explanation`` and
``other_layers``) has a valid ``explanation.json`` with the id it is filed under; every file it lists
exists, has the listed sha256 and parses (PNG decodes, ``.npz`` loads); the shared display images exist
and hash to their names.

``collect_garbage``: the artifacts no manifest line references, the shared images no kept artifact
uses, and render-cache directories of artifacts that are gone. Files younger than ``min_age_seconds``
are kept, because a run still in progress writes its artifacts before its manifest lines. A manifest
that does not parse stops gc (it cannot know what that run references).
"""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ArtifactError, InvalidInputError
from .compact import PAIR_DATA_ROLE, RENDER_DIR, read_pair_data
from .schema import ExplanationArtifact
from .store import ArtifactStore, read_manifest

DEFAULT_GC_MIN_AGE_SECONDS = 3600.0


@dataclass
class VerifyReport:
    runs: int = 0
    lines: int = 0
    artifacts: int = 0
    shared_images: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class GcReport:
    artifacts: list[Path] = field(default_factory=list)
    shared_images: list[Path] = field(default_factory=list)
    rendered: list[Path] = field(default_factory=list)
    bytes: int = 0
    applied: bool = False

    @property
    def paths(self) -> list[Path]:
        return [*self.artifacts, *self.shared_images, *self.rendered]


def _manifests(store: ArtifactStore) -> list[Path]:
    runs = store.root / "runs"
    return sorted(runs.glob("*.jsonl")) if runs.is_dir() else []


def _check_root(store: ArtifactStore) -> None:
    if not store.root.is_dir():
        raise InvalidInputError(
            f"artifact store {str(store.root)!r} does not exist; pass the --out / output_dir of a run"
        )


def _referenced_ids(store: ArtifactStore, manifest: Path) -> Iterator[tuple[int, str]]:
    for entry in read_manifest(manifest):
        record = entry.record
        for ref in [r for r in (record.explanation, *record.other_layers) if r is not None]:
            yield entry.index, ref.artifact_id


def _parse_file(path: Path, role: str, media_type: str) -> str | None:
    """None when the file decodes as what it claims to be, else the reason."""
    try:
        data = path.read_bytes()
        if media_type == "image/png":
            from PIL import Image

            with Image.open(io.BytesIO(data)) as image:
                image.verify()
        elif role == PAIR_DATA_ROLE:
            read_pair_data(data, source=str(path))
        else:
            import numpy as np

            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                for name in archive.files:
                    archive[name]
    except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
        return f"{type(exc).__name__}: {exc}"
    return None


def _verify_artifact(store: ArtifactStore, artifact_id: str) -> tuple[ExplanationArtifact | None, list[str]]:
    try:
        document = store.load(artifact_id)
    except ArtifactError as exc:
        return None, [str(exc)]
    found = store.problems(document, hash_shared=True)
    directory = store.artifact_dir(artifact_id)
    for entry in document.files:
        path = directory / entry.name
        if path.is_file():
            reason = _parse_file(path, entry.role, entry.media_type)
            if reason is not None:
                found.append(f"{entry.name}: does not parse ({reason})")
    return document, [f"artifact {artifact_id}: {problem}" for problem in found]


def verify_store(root: str | os.PathLike[str]) -> VerifyReport:
    """Check every run manifest under ``root`` and every artifact and shared image its lines reference."""
    store = ArtifactStore(root)
    _check_root(store)
    report = VerifyReport()
    checked: dict[str, list[str]] = {}
    shared: set[str] = set()
    for manifest in _manifests(store):
        report.runs += 1
        try:
            references = list(_referenced_ids(store, manifest))
        except (ArtifactError, OSError) as exc:
            report.problems.append(f"{manifest.name}: {exc}")
            continue
        report.lines += len(read_manifest(manifest))
        for index, identifier in references:
            if identifier not in checked:
                document, problems = _verify_artifact(store, identifier)
                checked[identifier] = problems
                if document is not None:
                    shared.update(
                        s.display_file.path for s in (document.query, document.candidate) if s.display_file is not None
                    )
            for problem in checked[identifier]:
                report.problems.append(f"{manifest.name} line index {index}: {problem}")
    report.artifacts = len(checked)
    report.shared_images = len(shared)
    return report


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _young(path: Path, now: float, min_age: float) -> bool:
    try:
        newest = max(
            [path.stat().st_mtime, *(p.stat().st_mtime for p in path.rglob("*"))]
            if path.is_dir()
            else [path.stat().st_mtime]
        )
    except OSError:
        return True
    return now - newest < min_age


def collect_garbage(
    root: str | os.PathLike[str], *, apply: bool = False, min_age_seconds: float = DEFAULT_GC_MIN_AGE_SECONDS
) -> GcReport:
    """What no manifest references (and, with ``apply``, remove it); see the module docstring."""
    store = ArtifactStore(root)
    _check_root(store)
    referenced: set[str] = set()
    for manifest in _manifests(store):
        try:
            referenced.update(identifier for _, identifier in _referenced_ids(store, manifest))
        except (ArtifactError, OSError) as exc:
            raise ArtifactError(f"gc stopped: {exc}; fix or remove that manifest first (nothing was removed)") from None
    now = time.time()
    report = GcReport(applied=apply)
    kept_images: set[str] = set()
    for directory in sorted((store.root / "artifacts").glob("??/*")) if (store.root / "artifacts").is_dir() else []:
        identifier = directory.name
        if identifier in referenced or _young(directory, now, min_age_seconds):
            try:
                document = store.load(identifier)
                kept_images.update(
                    s.display_file.path for s in (document.query, document.candidate) if s.display_file is not None
                )
            except (ArtifactError, InvalidInputError):
                pass
            continue
        report.artifacts.append(directory)
    for path in store.shared_paths():
        if store.relative(path) not in kept_images and not _young(path, now, min_age_seconds):
            report.shared_images.append(path)
    rendered = store.root / RENDER_DIR
    gone = {p.name for p in report.artifacts}
    for directory in sorted(rendered.glob("??/*")) if rendered.is_dir() else []:
        if directory.name in gone or not (store.root / "artifacts" / directory.name[:2] / directory.name).exists():
            report.rendered.append(directory)
    report.bytes = sum(_size(path) for path in report.paths)
    if apply:
        for path in report.paths:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    return report


__all__ = ["DEFAULT_GC_MIN_AGE_SECONDS", "GcReport", "VerifyReport", "collect_garbage", "verify_store"]
