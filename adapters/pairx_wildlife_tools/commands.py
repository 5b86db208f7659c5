"""``pairx-plugin run`` and ``pairx-plugin demo``, contributed through the ``pairx_plugin.commands``
entry-point group: each ``register_*`` adds its sub-parser and sets ``handler`` (args -> exit code,
the CLI core's convention: 0 done, 1 some match could not be explained, 2 bad input).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pairx_plugin.commands import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, positive_int


def _set_threads(threads: int | None) -> None:
    """Torch CPU threads: on a busy machine one thread per process avoids threads waiting on each other."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    from .pipeline import load_run_settings, run_pipeline

    _set_threads(args.threads)
    settings = load_run_settings(args.config, top_k=args.top_k)
    if args.trust_remote_code:
        settings = settings.model_copy(update={"trust_remote_code": True})
    out = Path(args.out or settings.pairx.output_dir or "pairx_out")
    explainer = None
    if args.ray is not None:
        from pairx_ray import RayExplainer

        explainer = RayExplainer(
            settings.model or "builtin",
            weights=settings.weights,
            workers=args.workers,
            address=args.ray,
            trust_remote_code=bool(settings.trust_remote_code),
        )
    result = run_pipeline(
        args.images,
        args.metadata,
        settings,
        out,
        run_name=args.run_name,
        progress=not args.no_progress,
        allow_outside_root=args.allow_outside_root,
        explainer=explainer,
    )
    explained = sum(r.explanation is not None for r in result.records)
    failed = sum(r.explanation_error is not None for r in result.records)
    unknown = len(result.query_labels) - result.scored_queries
    if result.scored_queries == 0:
        print(f"top-1 accuracy: n/a (no query has a known identity; {unknown} unknown)")
    else:
        print(
            f"top-1 accuracy: {result.accuracy:.4f} (over {result.scored_queries} queries with a known identity"
            + (f"; {unknown} unknown left out)" if unknown else ")")
        )
    print(f"match records: {len(result.records)} (explained: {explained}, failed: {failed})")
    print(f"manifest: {out / 'runs' / (result.run_name + '.jsonl')}")
    if result.review_page is not None:
        print(f"review page: {result.review_page}")
    return EXIT_OK if failed == 0 else EXIT_FAILED


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    _set_threads(args.threads)
    result = run_demo(
        args.out,
        animals=args.animals,
        sightings=args.sightings,
        top_k=args.top_k,
        k_colors=args.k_colors,
        seed=args.seed,
        progress=not args.no_progress,
        scenes=args.scenes,
    )
    return EXIT_OK if all(r.explanation_error is None for r in result.pipeline.records) else EXIT_FAILED


def register_run(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "run",
        help="wildlife-tools pipeline on a folder of images, with explained top-k matches",
        description="Embeddings, similarity, top-k, PAIR-X explanations, artifacts, manifest and review page "
        "for a folder of images described by a wildlife-tools metadata CSV (image_id, identity, path, "
        "optional bbox and split). With no split column every image queries all the others.",
    )
    parser.add_argument("--images", required=True, help="folder the CSV's 'path' values are relative to")
    parser.add_argument("--metadata", required=True, help="metadata CSV")
    parser.add_argument("--config", help="YAML with model:, data: and a pairx: section")
    parser.add_argument("--out", help="output folder (default: pairx.output_dir or ./pairx_out)")
    parser.add_argument("--top-k", type=positive_int, default=None, help="override pairx.top_k")
    parser.add_argument("--run-name", default=None, help="manifest name (default: a UTC timestamp)")
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="hide progress bars (wildlife-tools' feature extraction included)"
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let a transformers: model run its own Python code (same as trust_remote_code: true)",
    )
    parser.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept CSV paths that lead outside --images (by default every path, symlinks "
        "followed, must stay inside it)",
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        default=None,
        metavar="auto|ADDRESS",
        help="explain on Ray workers (pairx-plugin[ray]): 'auto' joins a running cluster or starts "
        "a local one, or HOST:PORT; see docs/scale.md",
    )
    parser.add_argument("--workers", type=positive_int, default=2, help="Ray workers, one model copy each (default 2)")
    parser.set_defaults(handler=_run)
    return parser


def register_demo(subparsers) -> argparse.ArgumentParser:
    from .demo import DEFAULT_ANIMALS, DEFAULT_K_COLORS, DEFAULT_SIGHTINGS, DEFAULT_THREADS, DEFAULT_TOP_K

    parser = subparsers.add_parser(
        "demo",
        help="synthetic re-ID set, real wildlife-tools pipeline, explanations and review page",
        description="Generates animals with unique spot/stripe patterns seen under known warps, matches them "
        "with wildlife-tools and the built-in EfficientNet-Lite0, explains the top matches, and prints top-1 "
        "accuracy and the share of match lines that land within one feature cell of the true correspondence.",
    )
    parser.add_argument("--out", default="pairx_demo", help="output folder (default: ./pairx_demo)")
    parser.add_argument("--animals", type=positive_int, default=DEFAULT_ANIMALS)
    parser.add_argument("--sightings", type=positive_int, default=DEFAULT_SIGHTINGS)
    parser.add_argument("--top-k", type=positive_int, default=DEFAULT_TOP_K)
    parser.add_argument("--k-colors", type=positive_int, default=DEFAULT_K_COLORS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=DEFAULT_THREADS,
        help=f"torch CPU threads (default {DEFAULT_THREADS}: on a shared 2-core machine more threads "
        "wait on each other; see docs/demo.md)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--scenes",
        action="store_true",
        help="the harder scene set: shared backgrounds, full images, animal masks (docs/metrics.md)",
    )
    parser.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m pairx_wildlife_tools run|demo ...``) with the same sub-commands."""
    from pairx_plugin.errors import PairXError

    parser = argparse.ArgumentParser(prog="python -m pairx_wildlife_tools")
    subparsers = parser.add_subparsers(dest="command", required=True)
    register_run(subparsers)
    register_demo(subparsers)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except PairXError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
