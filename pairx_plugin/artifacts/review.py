"""A static HTML review page for one run: what a curator opens to judge the explained matches.

Host-agnostic: it reads the run's JSON Lines manifest (``runs/<run_name>.jsonl`` under the store
root, one ``ManifestEntry`` per line) and the files the records point to; it never sees host
objects. One section per query (in manifest order), its candidates in rank order, one card per
record: score, cosine, whether the identities agree (when both labels are known), the composite and
the other panels, the metrics and links to ``explanation.json``. Records that failed show their
error; records outside ``top_k`` show that they were not explained.

Every id, label and message is HTML-escaped by jinja2's autoescape; links are relative paths
percent-encoded per segment, so a host string can never become markup or a ``javascript:`` URL.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from pydantic import ValidationError

from ..errors import ArtifactError, InvalidInputError
from .schema import ManifestEntry

TEMPLATE_NAME = "review.html.j2"
_SAFE_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")
#: panel roles shown first, in this order; any other image role follows alphabetically
_LAYER_PREFIX = "overlay_"
_ROLE_ORDER = ("composite", "only_lines", "only_colors", "heatmaps", "overlays", "display")


@dataclass
class Panel:
    role: str
    href: str


@dataclass
class Card:
    """What the template needs for one record (all strings still unescaped; jinja2 escapes them)."""

    index: int
    status: str
    rank: int
    candidate_id: str
    candidate_label: str | None
    query_label: str | None
    score: str
    same_identity: bool | None
    cosine: str | None = None
    layer: str | None = None
    metrics: dict[str, str] = field(default_factory=dict)
    composite: Panel | None = None
    panels: list[Panel] = field(default_factory=list)
    layers: list[Panel] = field(default_factory=list)
    json_href: str | None = None
    error: str | None = None
    missing_files: list[str] = field(default_factory=list)


@dataclass
class QuerySection:
    query_id: str
    query_label: str | None
    cards: list[Card]


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """Every entry of a run manifest, in file order; a bad line raises ``ArtifactError`` naming it."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ArtifactError(f"manifest {str(path)!r} does not exist; run the explanations first or check the run name") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"cannot read manifest {str(path)!r}: {exc}") from None
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entries.append(ManifestEntry.model_validate_json(line))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "<line>"
            raise ArtifactError(
                f"manifest {str(path)!r} line {number} is not a valid manifest entry ({where}: {first['msg']}); "
                "the file is damaged or from another tool; re-run to rewrite it"
            ) from None
    return entries


def _href(root: Path, page_dir: Path, relative: str) -> str:
    target = os.path.relpath(root / relative, page_dir)
    return "/".join(quote(part, safe="") for part in Path(target).as_posix().split("/"))


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}"


def _role_key(role: str) -> tuple[int, str]:
    return (_ROLE_ORDER.index(role) if role in _ROLE_ORDER else len(_ROLE_ORDER), role)


def _card(entry: ManifestEntry, root: Path, page_dir: Path) -> Card:
    record = entry.record
    same = None
    if record.query_label is not None and record.candidate_label is not None:
        same = record.query_label == record.candidate_label
    card = Card(
        index=entry.index, status=entry.status, rank=record.rank, candidate_id=record.candidate_id,
        candidate_label=record.candidate_label, query_label=record.query_label,
        score=_fmt(record.score) if record.score == record.score else "NaN", same_identity=same,
    )
    if record.explanation_error is not None:
        err = record.explanation_error
        card.error = f"{err.type} at stage '{err.stage}': {err.message}"
    ref = record.explanation
    if ref is None:
        return card
    card.cosine = _fmt(ref.cosine)
    card.layer = ref.layer
    card.metrics = {
        "IRM": _fmt(ref.metrics.irm, 3),
        "MC": f"{ref.metrics.mc:.3e}",
        "inlier ratio": _fmt(ref.metrics.inlier_ratio, 2),
        "matches": str(ref.metrics.match_count),
    }
    if (root / ref.json_path).is_file():
        card.json_href = _href(root, page_dir, ref.json_path)
    else:
        card.missing_files.append(ref.json_path)
    for role in sorted(ref.images, key=_role_key):
        relative = ref.images[role]
        if not (root / relative).is_file():  # a broken <img> would be a console error; say it instead
            card.missing_files.append(relative)
            continue
        panel = Panel(role=role, href=_href(root, page_dir, relative))
        if role == "composite" and card.composite is None:
            card.composite = panel
        elif role.startswith(_LAYER_PREFIX):  # transparent layers for UIs: linked, not shown
            card.layers.append(panel)
        else:
            card.panels.append(panel)
    return card


def build_sections(entries: Iterable[ManifestEntry], root: str | Path, page_dir: str | Path) -> list[QuerySection]:
    """Group entries by query (first appearance order), cards sorted by rank then manifest index."""
    root, page_dir = Path(root), Path(page_dir)
    sections: dict[str, QuerySection] = {}
    for entry in entries:
        record = entry.record
        section = sections.get(record.query_id)
        if section is None:
            section = sections[record.query_id] = QuerySection(record.query_id, record.query_label, [])
        section.cards.append(_card(entry, root, page_dir))
    for section in sections.values():
        section.cards.sort(key=lambda c: (c.rank, c.index))
    return list(sections.values())


def _summary(sections: Sequence[QuerySection]) -> dict[str, object]:
    cards = [c for s in sections for c in s.cards]
    top1 = [s.cards[0].same_identity for s in sections if s.cards and s.cards[0].same_identity is not None]
    return {
        "queries": len(sections),
        "records": len(cards),
        "explained": sum(c.status == "explained" for c in cards),
        "errors": sum(c.status == "error" for c in cards),
        "not_explained": sum(c.status == "not_explained" for c in cards),
        "top1_accuracy": (f"{sum(top1) / len(top1):.3f} over {len(top1)} labelled queries" if top1 else None),
    }


def render_review_html(entries: Sequence[ManifestEntry], root: str | Path, page_dir: str | Path,
                       title: str) -> str:
    """The page as a string; links are relative from ``page_dir`` to files under ``root``."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,  # every host string is escaped, whatever the template's file name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    sections = build_sections(entries, root, page_dir)
    return env.get_template(TEMPLATE_NAME).render(title=title, sections=sections, summary=_summary(sections))


def write_review_page(root: str | Path, run_name: str, output: str | Path | None = None,
                      title: str | None = None) -> Path:
    """Write the review page of ``runs/<run_name>.jsonl`` under ``root``; returns the page's path.

    Default location: ``<root>/review/<run_name>.html``. The page links to the artifacts with
    relative paths, so the store directory can be moved or zipped as a whole.
    """
    if not isinstance(run_name, str) or not _SAFE_RUN_NAME.match(run_name):
        raise InvalidInputError(
            f"run name {run_name!r} is not a plain file name; use letters, digits, '_', '.' and '-' "
            "(the store's run names already are)"
        )
    root = Path(root)
    entries = read_manifest(root / "runs" / f"{run_name}.jsonl")
    page = Path(output) if output is not None else root / "review" / f"{run_name}.html"
    page_dir = page.parent
    html = render_review_html(entries, root, page_dir, title or f"PAIR-X review: {run_name}")
    try:
        page_dir.mkdir(parents=True, exist_ok=True)
        tmp = page.with_name(f".{page.name}.tmp")
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, page)
    except OSError as exc:
        raise ArtifactError(f"cannot write review page {str(page)!r}: {exc}; check the output directory") from None
    return page


__all__ = ["write_review_page", "render_review_html", "build_sections", "read_manifest"]
