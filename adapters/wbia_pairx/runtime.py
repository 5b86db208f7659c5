"""Explaining WBIA matches and reading the results back: the adapter's working core.

``WbiaPairx`` holds the model cache and knows where artifacts live (``<ibs cachedir>/pairx`` unless
given a root). It turns selected candidates into ``MatchRecord``s, runs the core hook
(``pairx_plugin.hook.explain_matches``) per model under that model's lock (one query pass shared by
its candidates), and writes one index entry per pair, explanation or error. Nothing here raises
for a single pair's failure: the error is recorded and the match is untouched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pairx_plugin.artifacts.render import to_bgr_array
from pairx_plugin.engine.locks import model_lock
from pairx_plugin.errors import ArtifactError, InvalidInputError, PairXError
from pairx_plugin.records import ExplanationErrorInfo, MatchRecord

from .chips import WbiaChipSource
from .config import VERSION_PANELS, XpxConfig
from .index import ExplanationIndex, IndexEntry
from .models import CachedModel, HostLoader, ModelCache
from .selection import Candidate, select_candidates

log = logging.getLogger(__name__)


def render_version(render_config: dict[str, Any]) -> str:
    """WBIA's thumbnail version from ``render_single_result``'s keyword arguments."""
    if render_config.get("heatmask"):
        return "heatmask"
    if any(render_config.get(k) for k in ("draw_fmatches", "show_matches", "draw_fmatch")):
        return "matches"
    return "clean"


class WbiaPairx:
    """The adapter's state: the model cache and the artifact/index location."""

    def __init__(self, loader: HostLoader, store_root: str | Path | None = None, progress: bool = False) -> None:
        self.models = ModelCache(loader)
        self._store_root = Path(store_root) if store_root is not None else None
        self.progress = progress

    # ------------------------------------------------------------------ locations and keys
    def store_root(self, ibs: Any) -> Path:
        return self._store_root if self._store_root is not None else Path(ibs.get_cachedir()) / "pairx"

    def index(self, ibs: Any) -> ExplanationIndex:
        return ExplanationIndex(self.store_root(ibs))

    @staticmethod
    def config_digest(xpx: XpxConfig, cached: CachedModel) -> str:
        """Hash of everything that changes one pair's pictures: the picture keys and the model."""
        payload = {
            "pairx": xpx.pairx_config().digest(),
            "layer": xpx.xpx_layer_key,
            "channel_order": xpx.xpx_channel_order,
            "model_url": cached.model_url,
            "config_url": cached.config_url,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    # ------------------------------------------------------------------ explaining
    def explain_cm_list(self, ibs: Any, cm_list: Sequence[Any], xpx: XpxConfig) -> list[IndexEntry]:
        """Explain the top ``xpx_top_k`` candidates of every cm; the cms are only read."""
        xpx.validated()
        candidates: list[Candidate] = []
        for cm in cm_list:
            candidates.extend(select_candidates(cm, xpx.xpx_top_k, xpx.xpx_score))
        return self.explain_candidates(ibs, candidates, xpx)

    def explain_candidates(self, ibs: Any, candidates: Iterable[Candidate], xpx: XpxConfig) -> list[IndexEntry]:
        by_query: dict[int, list[Candidate]] = defaultdict(list)
        for cand in candidates:
            by_query[cand.qaid].append(cand)
        entries: list[IndexEntry] = []
        for qaid, group in by_query.items():
            entries.extend(self._explain_query(ibs, qaid, group, xpx))
        return entries

    def _explain_query(self, ibs: Any, qaid: int, group: list[Candidate], xpx: XpxConfig) -> list[IndexEntry]:
        from pairx_plugin.artifacts.store import ArtifactStore
        from pairx_plugin.hook import explain_matches

        quuid = ibs.get_annot_uuids(qaid)
        duuids = ibs.get_annot_uuids([c.daid for c in group])
        try:
            cached = self.models.get(ibs.get_annot_species_texts(qaid))
        except PairXError as exc:
            info = ExplanationErrorInfo.from_exception(exc, "load")
            return [self._put_error(ibs, qaid, quuid, c, d, info, xpx, None) for c, d in zip(group, duuids)]
        digest = self.config_digest(xpx, cached)
        records = [
            MatchRecord(
                query_id=str(qaid),
                candidate_id=str(c.daid),
                rank=c.rank,
                score=c.score,
                extras={"query_uuid": str(quuid), "database_uuid": str(d)},
            )
            for c, d in zip(group, duuids)
        ]
        # the hook explains ranks below top_k; our ranks are the host's, which skip the qaid
        config = xpx.pairx_config().model_copy(update={"top_k": max(c.rank for c in group) + 1})
        source = WbiaChipSource(ibs, cached.host_config, xpx.xpx_channel_order, cached.device)
        root = self.store_root(ibs)
        try:
            source.prefetch([qaid] + [c.daid for c in group])
        except Exception as exc:  # noqa: BLE001 - chips are read again one by one, failing per pair
            log.info("PAIR-X: batched chip read failed (%s); reading chips one by one", exc)
        try:
            with model_lock(cached.model):
                explained = explain_matches(
                    records=records,
                    images=source,
                    model=cached.model,
                    config=config,
                    store=ArtifactStore(root / "artifacts"),
                    progress=self.progress,
                    run_name=f"wbia-q{qaid}-{uuid.uuid4().hex[:12]}",
                )
        except Exception as exc:  # never fail the host's job; every pair gets the error
            log.warning("PAIR-X failed for query %s: %s", qaid, exc)
            info = ExplanationErrorInfo.from_exception(exc, "forward")
            return [self._put_error(ibs, qaid, quuid, c, d, info, xpx, cached) for c, d in zip(group, duuids)]
        index = ExplanationIndex(root)
        entries = []
        for cand, duuid, record in zip(group, duuids, explained):
            entry = _index_entry(
                qaid,
                quuid,
                cand,
                duuid,
                xpx,
                cached,
                digest,
                explanation=record.explanation,
                explanation_error=record.explanation_error,
            )
            index.put(entry)
            entries.append(entry)
        return entries

    def _put_error(self, ibs, qaid, quuid, cand, duuid, info, xpx, cached) -> IndexEntry:
        digest = self.config_digest(xpx, cached) if cached is not None else "unloaded-model"
        entry = _index_entry(qaid, quuid, cand, duuid, xpx, cached, digest, explanation_error=info)
        try:
            self.index(ibs).put(entry)
        except ArtifactError as exc:
            log.warning("could not record the PAIR-X error for (%s, %s): %s", qaid, cand.daid, exc)
        return entry

    # ------------------------------------------------------------------ reading back
    def lookup(self, ibs: Any, qaid: int, daid: int, xpx: XpxConfig) -> IndexEntry | None:
        cached = self.models.get(ibs.get_annot_species_texts(qaid))
        digest = self.config_digest(xpx, cached)
        return self.index(ibs).get(ibs.get_annot_uuids(qaid), ibs.get_annot_uuids(daid), digest)

    def ensure_entry(self, ibs: Any, qaid: int, daid: int, xpx: XpxConfig, score: float = float("nan")) -> IndexEntry:
        """The pair's index entry, explaining it now if it is missing and on-demand is enabled."""
        qaid, daid = int(qaid), int(daid)
        if qaid == daid:
            raise InvalidInputError(f"annotation {qaid} is both query and database; PAIR-X needs two annotations")
        entry = self.lookup(ibs, qaid, daid, xpx)
        if entry is None and xpx.xpx_render_on_demand:
            score = score if np.isfinite(score) else 0.0
            self.explain_candidates(ibs, [Candidate(qaid, daid, 0, float(score))], xpx)
            entry = self.lookup(ibs, qaid, daid, xpx)
        if entry is None:
            raise ArtifactError(
                f"no PAIR-X explanation stored for annotations ({qaid}, {daid}) under this config; "
                "raise xpx_top_k or set xpx_render_on_demand=True"
            )
        return entry

    def render(
        self, ibs: Any, qaid: int, daid: int, version: str, xpx: XpxConfig, score: float = float("nan")
    ) -> np.ndarray:
        """The stored PAIR-X picture for one thumbnail version, HxWx3 uint8 **BGR** (for cv2.imwrite)."""
        if version not in VERSION_PANELS:
            raise InvalidInputError(f"version must be one of {sorted(VERSION_PANELS)}, got {version!r}")
        entry = self.ensure_entry(ibs, qaid, daid, xpx, score)
        if entry.explanation is None:
            err = entry.explanation_error
            raise ArtifactError(
                f"PAIR-X could not explain ({qaid}, {daid}): "
                f"{err.type if err else 'unknown'}: {err.message if err else ''}"
            )
        panel = VERSION_PANELS[version]
        rel = entry.explanation.images.get(panel)
        if rel is None:
            raise ArtifactError(
                f"the stored explanation of ({qaid}, {daid}) has no {panel!r} image; "
                f"it has {sorted(entry.explanation.images)}"
            )
        path = self.store_root(ibs) / "artifacts" / rel
        try:
            png = path.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"cannot read the PAIR-X image {path}: {exc}") from exc
        return to_bgr_array(png)


def _index_entry(
    qaid: int,
    quuid: Any,
    cand: Candidate,
    duuid: Any,
    xpx: XpxConfig,
    cached: CachedModel | None,
    digest: str,
    **outcome: Any,
) -> IndexEntry:
    """The index entry of one (query, database) annotation pair; ``outcome``: its explanation and/or error."""
    return IndexEntry(
        query_uuid=str(quuid),
        database_uuid=str(duuid),
        config_digest=digest,
        qaid=qaid,
        daid=cand.daid,
        model_url=cached.model_url if cached is not None else "",
        cfgstr=xpx.get_cfgstr(),
        **outcome,
    )
