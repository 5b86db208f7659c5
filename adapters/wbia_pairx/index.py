"""The side-channel index: (query UUID, database UUID, config digest) -> artifact reference or error.

WBIA's ``AnnotMatch.from_dict`` drops every attribute outside ``initialize()``, and the review and
thumbnail paths rebuild match objects that way, so explanations are never hung on match objects.
Each entry is one small JSON file under ``<root>/index/``, named by the sha256 of the key (ids never
become file names), written with the store's :func:`~pairx_plugin.artifacts.store.atomic_write`
(temporary file, fsync, rename) so concurrent writers and readers never see half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pairx_plugin.artifacts.store import atomic_write
from pairx_plugin.errors import ArtifactError
from pairx_plugin.records import ExplanationErrorInfo, ExplanationRef

INDEX_SCHEMA = "wbia_pairx.index/1"


class IndexEntry(BaseModel):
    """One explained (or failed) pair, as the render path and the plugin API read it back."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_: str = Field(INDEX_SCHEMA, alias="schema")
    query_uuid: str
    database_uuid: str
    config_digest: str
    qaid: int
    daid: int
    model_url: str
    cfgstr: str
    explanation: ExplanationRef | None = None
    explanation_error: ExplanationErrorInfo | None = None


def entry_name(query_uuid: Any, database_uuid: Any, config_digest: str) -> str:
    key = json.dumps([str(query_uuid), str(database_uuid), config_digest])
    return hashlib.sha256(key.encode("utf-8")).hexdigest() + ".json"


class ExplanationIndex:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.dir = self.root / "index"

    def put(self, entry: IndexEntry) -> Path:
        path = self.dir / entry_name(entry.query_uuid, entry.database_uuid, entry.config_digest)
        payload = entry.model_dump_json(by_alias=True, indent=1).encode("utf-8")
        try:
            atomic_write(path, payload)
        except ArtifactError as exc:
            raise ArtifactError(
                f"cannot write the PAIR-X index entry: {exc}; check that {self.dir} is writable"
            ) from exc
        return path

    def get(self, query_uuid: Any, database_uuid: Any, config_digest: str) -> IndexEntry | None:
        path = self.dir / entry_name(query_uuid, database_uuid, config_digest)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ArtifactError(f"cannot read the PAIR-X index entry {path}: {exc}") from exc
        try:
            return IndexEntry.model_validate_json(text)
        except ValueError as exc:
            raise ArtifactError(
                f"PAIR-X index entry {path} is damaged ({exc.__class__.__name__}); delete it "
                "and the pair is explained again"
            ) from exc
