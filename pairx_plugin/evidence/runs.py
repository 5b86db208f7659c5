"""Reading a run directory (an artifact store root with ``runs/<name>.jsonl`` manifests) for evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InvalidInputError


def manifest_path(run_dir: str | Path, run: str | None = None) -> Path:
    """The manifest to read: ``runs/<run>.jsonl``, else the only or the newest one under ``run_dir``."""
    root = Path(run_dir)
    if not root.is_dir():
        raise InvalidInputError(f"run directory {str(root)!r} does not exist; pass the output directory of a run")
    runs = root / "runs"
    if run is not None:
        path = runs / f"{run}.jsonl"
        if not path.is_file():
            names = sorted(p.stem for p in runs.glob("*.jsonl")) if runs.is_dir() else []
            raise InvalidInputError(f"run {run!r} has no manifest {str(path)!r}; runs here: {names or 'none'}")
        return path
    found = sorted(runs.glob("*.jsonl"), key=lambda p: (p.stat().st_mtime, p.name)) if runs.is_dir() else []
    if not found:
        raise InvalidInputError(
            f"{str(root)!r} has no runs/*.jsonl manifest; pass the --out directory of `pairx-plugin run`/`demo` "
            "or the store root a host wrote to"
        )
    return found[-1]


def run_records(run_dir: str | Path, run: str | None = None) -> tuple[Path, list[Any]]:
    """The manifest used and its records (``MatchRecord``), in manifest order."""
    from ..artifacts.store import read_manifest

    path = manifest_path(run_dir, run)
    records = [entry.record for entry in read_manifest(path)]
    if not records:
        raise InvalidInputError(f"manifest {str(path)!r} has no records")
    return path, records
