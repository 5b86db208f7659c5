"""Curator decisions on explained matches: the file format, its storage beside a run, and the hand-back plan.

A curator judges a match record on the review page as *same individual*, *different* or *unsure*,
with an optional note. The page keeps decisions in the browser and exports them as a **decisions
file**: JSON Lines, one :class:`Decision` per line, schema in ``docs/schema/decision.schema.json``
(regenerate with ``pairx-plugin decisions schema --write``). A later line about the same record
replaces an earlier one (:func:`latest_decisions`), so files can simply be concatenated.

Host-agnostic. What each host consumes is built from the same plan:

* wildlife-tools (and any table of ``image_id, identity``): :func:`plan_identity_updates` says which
  image takes which identity; :func:`apply_to_metadata_csv` writes the updated CSV (plain ``csv``);
  ``adapters/pairx_wildlife_tools/decisions.py`` does the same on a pandas frame.
* WBIA: ``adapters/wbia_pairx/decisions.py`` sets annotation-match evidence decisions through ``ibs``.

Versioning (semver on :data:`DECISION_SCHEMA_VERSION`), as for the artifact schema.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ArtifactError, InvalidInputError

DECISION_SCHEMA_VERSION = "1.0.0"
DECISION_SCHEMA_NAME = "decision.schema.json"
DECISIONS_SUFFIX = ".decisions.jsonl"
MAX_NOTE_CHARS = 4000
MAX_LINE_CHARS = 20_000  # a decision line is small; anything longer is not one of ours

DecisionKind = Literal["same", "different", "unsure"]
DECISION_KINDS: tuple[str, ...] = ("same", "different", "unsure")

_RUN_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$"
_SHA256 = r"^[0-9a-f]{64}$"


class Decision(BaseModel):
    """One curator decision about one match record of one run (one line of a decisions file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: str = Field(
        DECISION_SCHEMA_VERSION,
        pattern=r"^1\.\d+\.\d+$",
        description="Version of this format (semver; readers accept major 1).",
    )
    run_name: str = Field(pattern=_RUN_NAME, description="The run whose manifest holds the record.")
    record_index: int = Field(ge=0, description="The record's ``index`` in the run manifest.")
    query_id: str = Field(min_length=1, max_length=1000, description="The record's query id (host string).")
    candidate_id: str = Field(min_length=1, max_length=1000, description="The record's candidate id (host string).")
    decision: DecisionKind = Field(
        description="same: the two images show the same individual; different: they do not; "
        "unsure: looked at, cannot tell."
    )
    note: str = Field("", max_length=MAX_NOTE_CHARS, description="Free text from the curator (may be empty).")
    decided_at: datetime = Field(description="When the curator decided (ISO 8601 with a time zone).")
    artifact_id: str | None = Field(
        None, pattern=_SHA256, description="The explanation artifact the curator looked at, if any."
    )

    @field_validator("decided_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("decided_at needs a time zone (e.g. '2026-11-30T17:00:00Z')")
        return value.astimezone(timezone.utc)

    @property
    def key(self) -> tuple[str, int]:
        """What identifies the decided record: (run name, manifest index)."""
        return (self.run_name, self.record_index)


# --------------------------------------------------------------------------- reading and writing


def parse_decisions(lines: Iterable[str], source: str = "<decisions>") -> list[Decision]:
    """Validate decision lines (blank lines skipped); the first bad one raises naming ``source`` and its line."""
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:
            raise InvalidInputError(
                f"{source} line {number} has {len(line)} characters (at most {MAX_LINE_CHARS}); "
                "it is not a decision line; export the decisions again from the review page"
            )
        try:
            out.append(Decision.model_validate_json(line))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "<line>"
            raise InvalidInputError(
                f"{source} line {number} is not a valid decision ({where}: {first['msg']}); "
                f"see docs/schema/{DECISION_SCHEMA_NAME}"
            ) from None
    return out


def read_decisions(path: str | os.PathLike[str]) -> list[Decision]:
    """Every decision of a decisions file, in file order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(
            f"decisions file {str(path)!r} does not exist; export it from the review page"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read decisions file {str(path)!r}: {exc}") from None
    return parse_decisions(text.splitlines(), source=repr(str(path)))


def decisions_text(decisions: Iterable[Decision]) -> str:
    """The JSON Lines text of ``decisions`` (what the page's export writes)."""
    return "".join(d.model_dump_json() + "\n" for d in decisions)


def latest_decisions(decisions: Iterable[Decision]) -> list[Decision]:
    """One decision per record: the latest by ``decided_at`` (the later line on a tie), in first-seen order."""
    latest: dict[tuple[str, int], Decision] = {}
    for decision in decisions:
        previous = latest.get(decision.key)
        if previous is None or decision.decided_at >= previous.decided_at:
            latest[decision.key] = decision
    return list(latest.values())


_STORE_LOCK = threading.Lock()


def store_decisions(run_dir: str | os.PathLike[str], lines: Iterable[str] | str) -> list[Path]:
    """Append POSTed decision lines beside their runs: ``<run_dir>/<run_name>.decisions.jsonl``.

    ``run_dir`` is the store's ``runs/`` directory (where ``<run_name>.jsonl`` manifests live). All
    lines are validated first, and each must name a record of an existing manifest (same index, query
    and candidate id); one bad line rejects the whole batch, so nothing half-stored. Returns the files
    appended to. Safe to call from several threads of one process.
    """
    run_dir = Path(run_dir)
    if isinstance(lines, str):
        lines = lines.splitlines()
    decisions = parse_decisions(lines, source="posted decisions")
    if not decisions:
        raise InvalidInputError("posted decisions: no decision lines; send one JSON object per line")
    from .artifacts.store import read_manifest

    manifests: dict[str, dict[int, tuple[str, str]]] = {}
    for decision in decisions:
        if decision.run_name not in manifests:
            manifest = run_dir / f"{decision.run_name}.jsonl"
            if not manifest.is_file():
                raise InvalidInputError(
                    f"posted decisions name run {decision.run_name!r}, which has no manifest in {str(run_dir)!r}"
                )
            manifests[decision.run_name] = {
                e.index: (e.record.query_id, e.record.candidate_id) for e in read_manifest(manifest)
            }
        expected = manifests[decision.run_name].get(decision.record_index)
        if expected != (decision.query_id, decision.candidate_id):
            raise InvalidInputError(
                f"posted decision for run {decision.run_name!r} record {decision.record_index} names "
                f"({decision.query_id!r}, {decision.candidate_id!r}) but the manifest has {expected!r}; "
                "reload the review page of this run"
            )
    written = []
    with _STORE_LOCK:
        for run_name in dict.fromkeys(d.run_name for d in decisions):
            target = run_dir / f"{run_name}{DECISIONS_SUFFIX}"
            text = decisions_text(d for d in decisions if d.run_name == run_name)
            try:
                with open(target, "a", encoding="utf-8") as handle:
                    handle.write(text)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                raise ArtifactError(f"cannot append decisions to {str(target)!r}: {exc}; check the store") from None
            written.append(target)
    return written


# --------------------------------------------------------------------------- identity updates


@dataclass
class IdentityPlan:
    """What a set of decisions means for an identity table.

    ``updates``: image id -> new identity (a query judged *same* as a candidate takes the
    candidate's identity). ``contradictions``: readable lines for decisions that disagree with the
    table but change nothing (a *different* between two images labelled alike). ``unused``:
    decisions that change no label (different / unsure ones that agree with the table).
    """

    updates: dict[str, str] = field(default_factory=dict)
    previous: dict[str, str] = field(default_factory=dict)
    contradictions: list[str] = field(default_factory=list)
    unused: int = 0


def plan_identity_updates(decisions: Iterable[Decision], identities: Mapping[str, str]) -> IdentityPlan:
    """Turn the latest decisions into label updates of ``identities`` (image id -> identity, '' = unknown).

    Raises :class:`InvalidInputError` naming the records when a decided id is not in the table, a
    *same* candidate has no identity, or one query is judged the same as candidates of different
    identities (a curator must settle that first): nothing is changed then.
    """
    plan = IdentityPlan()
    problems: list[str] = []
    proposed: dict[str, dict[str, Decision]] = {}
    for decision in latest_decisions(decisions):
        missing = [i for i in (decision.query_id, decision.candidate_id) if i not in identities]
        if missing:
            problems.append(f"record {decision.record_index} names {', '.join(map(repr, missing))}, not in the table")
            continue
        query_identity = identities[decision.query_id]
        candidate_identity = identities[decision.candidate_id]
        if decision.decision == "same":
            if not candidate_identity:
                problems.append(
                    f"record {decision.record_index}: candidate {decision.candidate_id!r} has no identity "
                    "to give the query"
                )
                continue
            proposed.setdefault(decision.query_id, {})[candidate_identity] = decision
        elif decision.decision == "different" and query_identity and query_identity == candidate_identity:
            plan.contradictions.append(
                f"record {decision.record_index}: {decision.query_id!r} and {decision.candidate_id!r} are both "
                f"labelled {query_identity!r} but were judged different"
            )
            plan.unused += 1
        else:
            plan.unused += 1
    for query_id, by_identity in proposed.items():
        if len(by_identity) > 1:
            records = ", ".join(f"record {d.record_index} -> {ident!r}" for ident, d in by_identity.items())
            problems.append(f"query {query_id!r} was judged the same as candidates of different identities ({records})")
            continue
        [new_identity] = by_identity
        if identities[query_id] == new_identity:
            plan.unused += 1
            continue
        plan.updates[query_id] = new_identity
        plan.previous[query_id] = identities[query_id]
    if problems:
        raise InvalidInputError(
            "the decisions cannot be applied to this table: "
            + "; ".join(problems)
            + "; fix the decisions (re-decide on the review page) or pass the matching metadata table"
        )
    return plan


def apply_to_metadata_csv(
    decisions: Sequence[Decision],
    metadata: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    id_column: str = "image_id",
    identity_column: str = "identity",
) -> IdentityPlan:
    """Write ``metadata`` (a wildlife-tools style CSV) to ``output`` with the decided identities.

    Every other column and row stays as it was; the output is written atomically and only when the
    whole plan is valid.
    """
    metadata, output = Path(metadata), Path(output)
    try:
        text = metadata.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read metadata table {str(metadata)!r}: {exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = list(reader.fieldnames or [])
    for needed in (id_column, identity_column):
        if needed not in columns:
            raise InvalidInputError(
                f"metadata table {str(metadata)!r} has no column {needed!r} (columns: {columns}); "
                "pass --id-column / --identity-column"
            )
    rows = list(reader)
    identities: dict[str, str] = {}
    for row in rows:
        image_id = row[id_column]
        if image_id in identities:
            raise InvalidInputError(f"metadata table {str(metadata)!r} lists {id_column} {image_id!r} twice")
        identities[image_id] = row[identity_column] or ""
    plan = plan_identity_updates(decisions, identities)
    for row in rows:
        if row[id_column] in plan.updates:
            row[identity_column] = plan.updates[row[id_column]]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    from .artifacts.store import atomic_write

    atomic_write(output, buffer.getvalue().encode("utf-8"))
    return plan


def write_pairs_csv(decisions: Sequence[Decision], output: str | os.PathLike[str]) -> None:
    """The latest decisions as a flat labels table (one row per decided pair)."""
    columns = ["query_id", "candidate_id", "decision", "note", "decided_at", "run_name", "record_index", "artifact_id"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for d in latest_decisions(decisions):
        writer.writerow({**d.model_dump(mode="json", include=set(columns))})
    from .artifacts.store import atomic_write

    atomic_write(Path(output), buffer.getvalue().encode("utf-8"))


# --------------------------------------------------------------------------- JSON Schema


def decision_json_schema() -> dict[str, Any]:
    """The JSON Schema of one decision line, as checked in under ``docs/schema/``."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://pairx-plugin.invalid/schema/decision/{DECISION_SCHEMA_VERSION}",
        **Decision.model_json_schema(mode="serialization"),
    }


def decision_schema_text() -> str:
    return json.dumps(decision_json_schema(), indent=2, ensure_ascii=False) + "\n"


def is_safe_run_name(name: object) -> bool:
    return isinstance(name, str) and re.match(_RUN_NAME, name) is not None


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


__all__ = [
    "DECISION_KINDS",
    "DECISION_SCHEMA_NAME",
    "DECISION_SCHEMA_VERSION",
    "Decision",
    "IdentityPlan",
    "apply_to_metadata_csv",
    "decision_json_schema",
    "decision_schema_text",
    "decisions_text",
    "latest_decisions",
    "parse_decisions",
    "plan_identity_updates",
    "read_decisions",
    "store_decisions",
    "write_pairs_csv",
]
