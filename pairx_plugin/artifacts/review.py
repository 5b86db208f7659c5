"""The review page of one run: a self-contained curation tool a curator opens from disk or from the service.

Host-agnostic: it reads the run's JSON Lines manifest (``runs/<run_name>.jsonl`` under the store
root, via :func:`pairx_plugin.artifacts.store.read_manifest`), each explained record's
``explanation.json`` (for the match coordinates and image sizes) and links the PNG files the records
point to. It never sees host objects.

The page is one HTML file: the run's data as a JSON block (``<script type="application/json">``,
never executed), our own stylesheet and script (``templates/review.css`` and ``review.js``) inlined
and allowed by their sha256 in the Content-Security-Policy, images linked by relative paths. No
CDN, no network (except, when served with ``decisions_url``, POSTing decisions to that same-origin
URL). The script builds the run view and the pair view from the data block with ``textContent``
only, so a host string can never become markup; the jinja2 part is autoescaped as well.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..decisions import DECISION_SCHEMA_VERSION
from ..errors import ArtifactError, InvalidInputError
from . import colormaps
from .schema import ManifestEntry
from .store import read_manifest  # the one manifest reader; ``review.read_manifest`` kept for one release

TEMPLATE_NAME = "review.html.j2"
SCRIPT_NAME = "review.js"
STYLE_NAME = "review.css"
PAGE_DATA_VERSION = 1
_TEMPLATES = Path(__file__).parent / "templates"
_SAFE_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")
_SAFE_URL = re.compile(r"^(/[A-Za-z0-9._~%/-]*|https?://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9._~%/-]*)?)$")
#: panel roles shown first, in this order; any other image role follows alphabetically
_LAYER_PREFIX = "overlay_"
_ROLE_ORDER = ("composite", "only_lines", "only_colors", "heatmaps", "overlays", "display")


# --------------------------------------------------------------------------- reading
def read_manifest_entries(path: str | Path) -> list[ManifestEntry]:
    """Every entry of a run manifest; a missing file raises :class:`ArtifactError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"manifest {str(path)!r} does not exist; run the explanations first or check the run name")
    return read_manifest(path)


@dataclass
class Panel:
    role: str
    href: str


@dataclass
class Card:
    """One record as the page needs it (strings still unescaped; the template and the script escape them)."""

    index: int
    status: str
    rank: int
    query_id: str
    candidate_id: str
    candidate_label: str | None
    query_label: str | None
    score: float | str
    same_identity: bool | None
    cosine: float | None = None
    layer: str | None = None
    artifact_id: str | None = None
    metrics: dict[str, float | int | None] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    panels: list[Panel] = field(default_factory=list)
    sizes: dict[str, list[int]] = field(default_factory=dict)
    stride: dict[str, list[float]] = field(default_factory=dict)
    matches: list[list[float | int | None]] = field(default_factory=list)
    line_selection: str | None = None  # curator lines' selection (schema 1.3): foreground / relevance
    json_href: str | None = None
    error: str | None = None
    missing_files: list[str] = field(default_factory=list)

    def payload(self) -> dict[str, Any]:
        """The record in the page's data block (short keys: a run can hold thousands of records)."""
        return {
            "i": self.index,
            "status": self.status,
            "rank": self.rank,
            "q": self.query_id,
            "c": self.candidate_id,
            "ql": self.query_label,
            "cl": self.candidate_label,
            "score": self.score,
            "same": self.same_identity,
            "cosine": self.cosine,
            "layer": self.layer,
            "artifact": self.artifact_id,
            "metrics": self.metrics,
            "files": self.files,
            "sizes": self.sizes,
            "stride": self.stride,
            "matches": self.matches,
            "lines": self.line_selection,
            "json": self.json_href,
            "error": self.error,
            "missing": self.missing_files,
        }


@dataclass
class QuerySection:
    query_id: str
    query_label: str | None
    cards: list[Card]


_PLAIN_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]+$")


def _root_prefix(root: Path, page_dir: Path) -> list[str]:
    """Path segments from the page's folder to the store root ([] when they are the same)."""
    relative = Path(os.path.relpath(root.absolute(), page_dir.absolute())).as_posix()
    return [] if relative == "." else relative.split("/")


def _href(prefix: list[str], relative: str) -> str:
    """Relative link from the page to ``root/relative``, percent-encoded per segment (never a scheme)."""
    parts = [*prefix, *relative.replace("\\", "/").split("/")]
    return "/".join(part if _PLAIN_SEGMENT.match(part) else quote(part, safe="") for part in parts)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _score(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return float(value)


def _role_key(role: str) -> tuple[int, str]:
    return (_ROLE_ORDER.index(role) if role in _ROLE_ORDER else len(_ROLE_ORDER), role)


class _ArtifactReader:
    """Reads each ``explanation.json`` once (records of one run often share artifacts)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, dict[str, Any] | None] = {}

    def images(self, ref: Any) -> dict[str, str]:
        """The record's panel files; a compact (1.2) artifact's panels are drawn from its data on demand."""
        from .compact import materialize
        from .store import ArtifactStore

        try:
            return materialize(ArtifactStore(self.root), ref.artifact_id, _ROLE_ORDER)
        except (ArtifactError, InvalidInputError):
            return dict(ref.images)

    def document(self, relative: str) -> dict[str, Any] | None:
        if relative not in self._cache:
            try:
                loaded = json.loads((self.root / relative).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                loaded = None
            self._cache[relative] = loaded if isinstance(loaded, dict) else None
        return self._cache[relative]


def _geometry(card: Card, document: dict[str, Any]) -> None:
    """Display sizes, cell size (display px) and the lines to draw from an artifact document, when it has them.

    The lines are the curator lines (schema 1.3) when the document has them, else the published matches.
    """
    try:
        for side in ("query", "candidate"):
            info = document[side]
            card.sizes[side] = [int(info["display_width"]), int(info["display_height"])]
        curator = document.get("curator_lines")
        lines = document.get("matches", []) if not isinstance(curator, dict) else curator["matches"]
        card.line_selection = None if not isinstance(curator, dict) else str(curator["selection"])
        for match in lines:
            qx, qy = (float(v) for v in match["query_display_xy"])
            cx, cy = (float(v) for v in match["candidate_display_xy"])
            card.matches.append(
                [
                    round(qx, 2),
                    round(qy, 2),
                    round(cx, 2),
                    round(cy, 2),
                    _finite(float(match["relevance"])),
                    match.get("color_index"),
                ]
            )
        reference = document.get("matches") or lines  # any match gives the cell size
        if reference:
            first = reference[0]
            for side in ("query", "candidate"):
                info = document[side]
                cell, xy = first[f"{side}_cell"], first[f"{side}_xy"]
                stride = [float(xy[0]) / (int(cell[0]) + 0.5), float(xy[1]) / (int(cell[1]) + 0.5)]
                card.stride[side] = [
                    stride[0] * info["display_width"] / info["input_width"],
                    stride[1] * info["display_height"] / info["input_height"],
                ]
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        card.sizes, card.matches, card.stride = {}, [], {}  # an older or foreign document: images only
        card.line_selection = None


def _card(entry: ManifestEntry, root: Path, prefix: list[str], reader: _ArtifactReader) -> Card:
    record = entry.record
    same = None
    if record.query_label is not None and record.candidate_label is not None:
        same = record.query_label == record.candidate_label
    card = Card(
        index=entry.index,
        status=entry.status,
        rank=record.rank,
        query_id=record.query_id,
        candidate_id=record.candidate_id,
        candidate_label=record.candidate_label,
        query_label=record.query_label,
        score=_score(record.score),
        same_identity=same,
    )
    if record.explanation_error is not None:
        err = record.explanation_error
        card.error = f"{err.type} at stage '{err.stage}': {err.message}"
    ref = record.explanation
    if ref is None:
        return card
    card.cosine = _finite(ref.cosine)
    card.layer = ref.layer
    card.artifact_id = ref.artifact_id
    card.metrics = {
        "irm": _finite(ref.metrics.irm),
        "mc": _finite(ref.metrics.mc),
        "inlier_ratio": _finite(ref.metrics.inlier_ratio),
        "match_count": ref.metrics.match_count,
        # the combined evidence score (docs/metrics.md); absent on artifacts made before schema 1.1
        "evidence": _finite(ref.metrics.evidence.score) if ref.metrics.evidence is not None else None,
    }
    if os.path.isfile(os.path.join(root, ref.json_path)):
        card.json_href = _href(prefix, ref.json_path)
        document = reader.document(ref.json_path)
        if document is not None:
            _geometry(card, document)
    else:
        card.missing_files.append(ref.json_path)
    images = reader.images(ref)
    for role in sorted(images, key=_role_key):
        relative = images[role]
        if not os.path.isfile(os.path.join(root, relative)):  # a broken <img> would be a console error; say it instead
            card.missing_files.append(relative)
            continue
        card.files[role] = _href(prefix, relative)
        if not role.startswith(_LAYER_PREFIX):
            card.panels.append(Panel(role=role, href=card.files[role]))
    return card


def build_sections(entries: Iterable[ManifestEntry], root: str | Path, page_dir: str | Path) -> list[QuerySection]:
    """Group entries by query (first appearance order), cards sorted by rank then manifest index."""
    root, page_dir = Path(root), Path(page_dir)
    reader = _ArtifactReader(root)
    prefix = _root_prefix(root, page_dir)
    sections: dict[str, QuerySection] = {}
    for entry in entries:
        record = entry.record
        section = sections.get(record.query_id)
        if section is None:
            section = sections[record.query_id] = QuerySection(record.query_id, record.query_label, [])
        section.cards.append(_card(entry, root, prefix, reader))
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


def _palette() -> dict[str, Any]:
    """The renderer's colours, so the page's SVG and swatches match the PNG layers."""
    dark = [colormaps.SEQUENTIAL[name][-1][1] for name in colormaps.SEQUENTIAL_ORDER]
    return {
        "lines": ["#{:02x}{:02x}{:02x}".format(*colour) for colour in colormaps.LINE_PALETTE],
        "maps": ["#{:02x}{:02x}{:02x}".format(*(round(v * 255) for v in rgb)) for rgb in dark],
        "map_names": list(colormaps.SEQUENTIAL_ORDER),
    }


def _json_for_html(value: object) -> str:
    """JSON that cannot end its ``<script type="application/json">`` block or open a comment."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _asset(name: str) -> str:
    try:
        return (_TEMPLATES / name).read_text(encoding="utf-8")
    except OSError as exc:  # pragma: no cover - a broken installation
        raise ArtifactError(
            f"the review page asset {name!r} is missing from the installation ({exc}); reinstall pairx-plugin"
        ) from None


def render_review_html(
    entries: Sequence[ManifestEntry],
    root: str | Path,
    page_dir: str | Path,
    title: str,
    *,
    run_name: str | None = None,
    decisions_url: str | None = None,
) -> str:
    """The page as a string; links are relative from ``page_dir`` to files under ``root``.

    ``decisions_url``: a same-origin path (or http(s) URL) the page POSTs each decision to, as JSON
    Lines, when it is served (``None``: decisions stay in the browser and the export file).
    """
    import jinja2

    if decisions_url is not None and not _SAFE_URL.match(decisions_url):
        raise InvalidInputError(
            f"decisions_url {decisions_url!r} is not a plain path or http(s) URL; pass e.g. '/runs/<name>/decisions'"
        )
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=True,  # every host string is escaped, whatever the template's file name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    sections = build_sections(entries, root, page_dir)
    run_name = run_name or (entries[0].run_name if entries else "run")
    data = {
        "version": PAGE_DATA_VERSION,
        "run": run_name,
        "title": title,
        "post_url": decisions_url,
        "decision_schema": DECISION_SCHEMA_VERSION,
        "palette": _palette(),
        "queries": [
            {"q": s.query_id, "ql": s.query_label, "records": [c.payload() for c in s.cards]} for s in sections
        ],
    }
    script, style = _asset(SCRIPT_NAME), _asset(STYLE_NAME)
    csp = "; ".join(
        [
            "default-src 'none'",
            "img-src 'self' file: data:",
            f"style-src {_csp_hash(style)}",
            f"script-src {_csp_hash(script)}",
            "connect-src 'self'" if decisions_url else "connect-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )
    from markupsafe import Markup

    return env.get_template(TEMPLATE_NAME).render(
        title=title,
        sections=sections,
        summary=_summary(sections),
        csp=csp,
        data_json=Markup(_json_for_html(data)),
        script=Markup(script),
        style=Markup(style),
    )


_DATA_BLOCK = re.compile(r'<script type="application/json" id="review-data">(.*?)</script>', re.DOTALL)


def read_page_data(html: str) -> dict[str, Any]:
    """The data block of a review page (``queries`` -> ``records``), e.g. for a test or a tool that checks a page."""
    found = _DATA_BLOCK.search(html)
    if found is None:
        raise InvalidInputError(
            "the text is not a pairx review page (no review-data block); write it with write_review_page"
        )
    data: dict[str, Any] = json.loads(found.group(1))
    return data


def page_links(data: dict[str, Any]) -> list[str]:
    """Every relative file link of a page's records (panels, overlay layers, explanation.json)."""
    return [
        href
        for query in data["queries"]
        for record in query["records"]
        for href in [*record["files"].values(), record["json"]]
        if href
    ]


def write_review_page(
    root: str | Path,
    run_name: str,
    output: str | Path | None = None,
    title: str | None = None,
    *,
    decisions_url: str | None = None,
) -> Path:
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
    entries = read_manifest_entries(root / "runs" / f"{run_name}.jsonl")
    page = Path(output) if output is not None else root / "review" / f"{run_name}.html"
    page_dir = page.parent
    html = render_review_html(
        entries, root, page_dir, title or f"PAIR-X review: {run_name}", run_name=run_name, decisions_url=decisions_url
    )
    try:
        page_dir.mkdir(parents=True, exist_ok=True)
        tmp = page.with_name(f".{page.name}.tmp")
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, page)
    except OSError as exc:
        raise ArtifactError(f"cannot write review page {str(page)!r}: {exc}; check the output directory") from None
    return page


__all__ = ["build_sections", "page_links", "read_manifest", "read_page_data", "render_review_html", "write_review_page"]
