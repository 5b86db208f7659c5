"""``pairx-plugin explain IMG_A IMG_B``: explain one pair and write its artifacts.

The pair goes through the same path as a host pipeline's matches: one ``MatchRecord`` and a
``FileImageSource`` into :func:`pairx_plugin.hook.explain_matches`, writing to an
``ArtifactStore``. Both images are checked before the model is loaded, so a typo in a path fails
in a fraction of a second.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, add_model_arguments, load_bundle, positive_int

DEFAULT_OUT = "pairx_out"
BAD_INPUT_STAGES = {"load", "store"}  # a record error the user can fix: an image file or the output dir


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "explain",
        help="explain one image pair and write its PAIR-X artifacts",
        description="Explain why the model matches IMG_A (query) with IMG_B (candidate): heat maps, "
        "match lines, colour maps and overlay layers, written to an artifact store. "
        "Prints one summary line: cosine, layer, match count, IRM, MC and the composite PNG.",
    )
    parser.add_argument("image_a", metavar="IMG_A", help="query image file")
    parser.add_argument("image_b", metavar="IMG_B", help="candidate image file")
    add_model_arguments(parser)
    parser.add_argument(
        "--layer",
        action="append",
        metavar="KEY",
        dest="layers",
        help="layer key to explain (repeatable; default: the model's suggested layer, see `pairx-plugin layers`)",
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR", help=f"artifact store directory (default: ./{DEFAULT_OUT})"
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML/JSON PAIR-X configuration (a 'pairx:' section or the whole file); command-line options override it",
    )
    parser.add_argument("--mode", choices=("conservative", "parity"), help="LRP rules (default: conservative)")
    parser.add_argument("--k-lines", type=positive_int, metavar="N", help="matches drawn as lines (default 20)")
    parser.add_argument("--k-colors", type=positive_int, metavar="N", help="matches with a colour map (default 10)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)
    return parser


def build_config(args: argparse.Namespace):
    """The ``--config`` file (or defaults) with the command-line options laid over it, validated."""
    from ..config import PairXConfig, load_config

    base = load_config(Path(args.config)) if args.config else PairXConfig()
    overrides = {
        "layer_keys": args.layers,
        "mode": args.mode,
        "k_lines": args.k_lines,
        "k_colors": args.k_colors,
    }
    values = base.model_dump()
    values.update({key: value for key, value in overrides.items() if value is not None})
    values.update(enabled=True, output_dir=str(args.out))  # rank 0 < top_k always: the pair is explained
    return PairXConfig(**values)


def run(args: argparse.Namespace) -> int:
    from ..artifacts.store import ArtifactStore
    from ..hook import explain_matches
    from ..images import FileImageSource, load_image
    from ..records import MatchRecord

    query_id, candidate_id = str(args.image_a), str(args.image_b)
    for path in (query_id, candidate_id):
        load_image(path)  # fail fast on a bad file (InvalidInputError -> exit 2)
    config = build_config(args)
    bundle = load_bundle(args, device=args.device or config.device)
    config = config.model_copy(update={"device": "auto"})  # the model now sits where it should run
    source = FileImageSource(
        {query_id: query_id, candidate_id: candidate_id}, bundle.input_size, bundle.mean, bundle.std
    )
    store = ArtifactStore(args.out)
    record = MatchRecord(query_id=query_id, candidate_id=candidate_id, rank=0, score=float("nan"))
    [result] = explain_matches(
        records=[record], images=source, model=bundle.model, config=config, store=store, progress=not args.no_progress
    )
    if result.explanation_error is not None:
        error = result.explanation_error
        message = " ".join(error.message.split())
        print(f"pairx-plugin explain: error ({error.stage}, {error.type}): {message}", file=sys.stderr)
        return EXIT_BAD_INPUT if error.stage in BAD_INPUT_STAGES else EXIT_FAILED
    from ..artifacts.compact import materialize
    from ..config import ALL_PANELS

    for ref in [result.explanation, *result.other_layers]:  # compact artifacts: draw every panel for the user
        if ref is not None:
            materialize(store, ref.artifact_id, ALL_PANELS)
    print(summary_line(result, store))
    return EXIT_OK


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def summary_line(record, store) -> str:
    """cosine, layer, match count, IRM, MC and the composite's path (or the JSON's without one), for the
    first layer; further ``--layer`` keys are named at the end (their artifacts are in the store)."""
    from ..artifacts.compact import materialize
    from ..errors import ArtifactError

    ref = record.explanation
    try:
        images = materialize(store, ref.artifact_id, ["composite"])  # eager, cached or drawn now
    except ArtifactError:
        images = dict(ref.images)
    image = images.get("composite") or ref.json_path
    path = Path(store.root) / image
    metrics = ref.metrics
    return (
        f"cosine {ref.cosine:.4f}  layer {ref.layer}  matches {metrics.match_count}  "
        f"IRM {_number(metrics.irm, '.4f')}  MC {_number(metrics.mc, '.4g')}  "
        f"{'composite' if 'composite' in images else 'artifact'} {path}"
        + ("  (cached)" if ref.cache_hit else "")
        + (f"  (+ layers {', '.join(other.layer for other in record.other_layers)})" if record.other_layers else "")
    )
