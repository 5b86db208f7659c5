"""``pairx-plugin demo``: the whole pipeline on a synthetic re-ID set whose geometry is known.

Generates the set (:mod:`.synthetic`), runs wildlife-tools (WildlifeDataset with ``img_load="bbox"``
→ DeepFeatures with the built-in ImageNet EfficientNet-Lite0 → CosineSimilarity → KnnClassifier),
explains the top-3 matches of every query, writes artifacts, manifest and review page, and reports
top-1 accuracy and where the match lines land (:mod:`.correspondence`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pairx_plugin.artifacts.schema import ExplanationArtifact
from pairx_plugin.artifacts.store import ArtifactStore
from pairx_plugin.config import PairXConfig
from pairx_plugin.errors import ArtifactError, InvalidInputError

from .correspondence import CorrespondenceSummary, LineScore, landed_lines, summarise
from .evidence_report import EvidenceSummary, evidence_lines, summarise_evidence
from .pipeline import DataSettings, PipelineResult, RunSettings, run_pipeline
from .synthetic import SyntheticSet, generate_synthetic_set
from .synthetic_scenes import generate_scene_set

DEMO_RUN_NAME = "demo"
#: defaults sized to finish well inside 10 minutes on 2 CPU cores (see docs/demo.md for timings)
DEFAULT_ANIMALS = 12
DEFAULT_SIGHTINGS = 4
DEFAULT_TOP_K = 3
DEFAULT_K_COLORS = 3
DEFAULT_THREADS = 1  # torch threads for the demo command; measured faster on a busy 2-core machine


@dataclass
class DemoResult:
    pipeline: PipelineResult
    synthetic: SyntheticSet
    line_scores: list[LineScore]
    correspondence: CorrespondenceSummary
    seconds: float
    evidence: EvidenceSummary | None = None
    curator_line_scores: list[LineScore] | None = None  # the curator lines (artifact.curator_lines)
    curator_correspondence: CorrespondenceSummary | None = None

    @property
    def accuracy(self) -> float:
        return self.pipeline.accuracy


def _cell_size(artifact: ExplanationArtifact) -> float:
    """Side of one feature cell in candidate input pixels, from a match's cell index and centre."""
    match = (artifact.matches or _drawn(artifact, "curator"))[0]
    cx, cy = match.candidate_cell
    return float(max(match.candidate_xy[0] / (cx + 0.5), match.candidate_xy[1] / (cy + 0.5)))


def _drawn(artifact: ExplanationArtifact, lines: str) -> list[Any]:
    """The published top matches, or the curator lines (the published ones for artifacts without them)."""
    return list(artifact.drawn_matches() if lines == "curator" else artifact.matches)


def score_lines(result: PipelineResult, synthetic: SyntheticSet, lines: str = "published") -> list[LineScore]:
    """One :class:`LineScore` per explained record, from its artifact's lines.

    lines: ``published`` (the top ``k_lines`` matches by relevance, ``artifact.matches``) or ``curator``
    (what the panels draw: ``artifact.curator_lines``, chosen on the animal when the host gave masks).
    """
    if lines not in ("published", "curator"):
        raise InvalidInputError(f"score_lines: lines={lines!r} must be 'published' or 'curator'")
    scores = []
    for record in result.records:
        ref = record.explanation
        if ref is None:
            continue
        path = result.out_dir / ref.json_path
        try:
            artifact = ExplanationArtifact.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"cannot read artifact {str(path)!r} to score its lines: {exc}") from None
        if record.query_id not in synthetic.sightings or record.candidate_id not in synthetic.sightings:
            raise InvalidInputError(
                f"record {record.query_id!r} -> {record.candidate_id!r} is not a pair of this synthetic set"
            )
        drawn = _drawn(artifact, lines)
        if not drawn:
            scores.append(
                LineScore(record.query_id, record.candidate_id, record.query_label == record.candidate_label, 0, 0, 0.0)
            )
            continue
        size = (artifact.candidate.input_height, artifact.candidate.input_width)
        if size != (artifact.query.input_height, artifact.query.input_width):
            raise InvalidInputError(f"query and candidate inputs differ in size ({size}); the demo uses one input size")
        mapping = synthetic.query_to_candidate(record.query_id, record.candidate_id, size)
        hits, baseline = landed_lines(
            np.asarray([m.query_xy for m in drawn], dtype=float),
            np.asarray([m.candidate_xy for m in drawn], dtype=float),
            mapping,
            _cell_size(artifact),
        )
        scores.append(
            LineScore(
                record.query_id,
                record.candidate_id,
                record.query_label == record.candidate_label,
                len(hits),
                int(hits.sum()),
                baseline,
            )
        )
    return scores


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _per_match(lines: int, matches: int) -> str:
    return f"{lines / matches:.1f}" if matches else "n/a"


def _curator_report(c: CorrespondenceSummary | None) -> list[str]:
    """The curator lines' shares (what the panels draw), with how many lines each match gets."""
    if c is None:
        return []
    return [
        (
            f"curator lines (drawn) within one cell of the true correspondence, correct matches: "
            f"{_share(c.correct_share)} ({c.correct_lines} lines over {c.correct_matches} matches, "
            f"{_per_match(c.correct_lines, c.correct_matches)} per match)"
        ),
        (
            f"curator lines (drawn) within one cell of the true correspondence, incorrect matches: "
            f"{_share(c.incorrect_share)} ({c.incorrect_lines} lines over {c.incorrect_matches} matches, "
            f"{_per_match(c.incorrect_lines, c.incorrect_matches)} per match)"
        ),
    ]


def report_lines(result: DemoResult) -> list[str]:
    """The figures the demo prints (also the test's way to read them back)."""
    c = result.correspondence
    pipeline = result.pipeline
    explained = sum(r.explanation is not None for r in pipeline.records)
    failed = sum(r.explanation_error is not None for r in pipeline.records)
    animals = len({s.identity for s in result.synthetic.sightings.values()})
    return [
        f"images: {len(result.synthetic.sightings)} ({animals} animals)",
        f"top-1 accuracy: {result.accuracy:.4f}",
        f"explained matches: {explained} (failed: {failed})",
        (
            f"lines within one cell of the true correspondence, correct matches: {_share(c.correct_share)} "
            f"({c.correct_lines} lines over {c.correct_matches} matches; chance {_share(c.correct_baseline)})"
        ),
        (
            f"lines within one cell of the true correspondence, incorrect matches: {_share(c.incorrect_share)} "
            f"({c.incorrect_lines} lines over {c.incorrect_matches} matches; chance {_share(c.incorrect_baseline)})"
        ),
        *_curator_report(result.curator_correspondence),
        *(evidence_lines(result.evidence) if result.evidence is not None else []),
        f"review page: {pipeline.review_page}",
        (
            f"time: {result.seconds:.1f} s (features {pipeline.timings.get('features_s', 0):.1f} s, "
            f"explanations {pipeline.timings.get('explain_s', 0):.1f} s)"
        ),
    ]


def run_demo(
    out_dir: str | Path,
    *,
    animals: int = DEFAULT_ANIMALS,
    sightings: int = DEFAULT_SIGHTINGS,
    top_k: int = DEFAULT_TOP_K,
    k_colors: int = DEFAULT_K_COLORS,
    seed: int = 0,
    progress: bool = True,
    model: Any = None,
    render: list[str] | None = None,
    echo: Callable[[str], None] | None = print,
    scenes: bool = False,
) -> DemoResult:
    """Generate, match, explain, score; writes ``demo_summary.json`` beside the review page.

    model: a ``ModelBundle`` to use instead of loading the built-in one; render: panel kinds
    (default: all of them); scenes: the harder scene set (:mod:`.synthetic_scenes`: shared backgrounds,
    full images with the animal's segmentation) instead of the cropped easy set.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    if scenes:
        synthetic: Any = generate_scene_set(
            out_dir / "data", animals=animals, sightings=sightings, scenes=max(2, animals // 2), seed=seed
        )
    else:
        synthetic = generate_synthetic_set(out_dir / "data", animals=animals, sightings=sightings, seed=seed)
    settings = RunSettings(
        model="builtin",
        data=DataSettings(img_load="full" if scenes else "bbox"),
        pairx=PairXConfig(
            top_k=top_k,
            k_colors=k_colors,
            output_dir=str(out_dir),
            **({"render": render} if render is not None else {}),
        ),
    )
    ArtifactStore(out_dir).remove_run(DEMO_RUN_NAME)  # the demo owns its name; manifests are exclusive
    pipeline = run_pipeline(
        out_dir / "data",
        synthetic.metadata,
        settings,
        out_dir,
        run_name=DEMO_RUN_NAME,
        progress=progress,
        model=model,
        review_path=out_dir / "review.html",
    )
    line_scores = score_lines(pipeline, synthetic)
    curator_scores = score_lines(pipeline, synthetic, "curator")
    evidence = summarise_evidence(pipeline.records, out_dir, synthetic)
    result = DemoResult(
        pipeline,
        synthetic,
        line_scores,
        summarise(line_scores),
        time.perf_counter() - start,
        evidence,
        curator_scores,
        summarise(curator_scores),
    )
    summary = {
        "accuracy": result.accuracy,
        "correspondence": asdict(result.correspondence),
        "curator_correspondence": asdict(summarise(curator_scores)),
        "seconds": result.seconds,
        "timings": pipeline.timings,
        "settings": {
            "animals": animals,
            "sightings": sightings,
            "top_k": top_k,
            "k_colors": k_colors,
            "seed": seed,
            "scenes": scenes,
        },
        "evidence": evidence_lines(evidence),
        "per_match": [asdict(s) | {"share": s.share if s.lines else None} for s in line_scores],
    }
    (out_dir / "demo_summary.json").write_text(json.dumps(summary, indent=1, default=float))
    if echo is not None:
        for line in report_lines(result):
            echo(line)
    return result
