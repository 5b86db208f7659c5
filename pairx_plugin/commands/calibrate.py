"""``pairx-plugin calibrate RUN_DIR``: fit P(correct | evidence) on a labelled run and write a calibration file.

``pairx.rerank.calibration`` (with ``score: calibrated``) and ``evaluate --calibration`` read it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "calibrate",
        help="fit a monotone calibration of the evidence score on a labelled run",
        description="Fit P(correct | score) on the labelled records of a run (isotonic regression by "
        "pool-adjacent-violators, or a one-feature logistic regression) and write it as JSON.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="output directory of a labelled run (holds runs/*.jsonl)")
    parser.add_argument("--run", metavar="NAME", help="manifest runs/NAME.jsonl (default: the newest)")
    parser.add_argument("--method", choices=["isotonic", "logistic"], default="isotonic")
    parser.add_argument(
        "--score",
        default="evidence",
        choices=["evidence", "irm", "mc", "inlier_ratio", "match_count"],
        help="which number to calibrate (default: evidence)",
    )
    parser.add_argument("--out", metavar="FILE", help="calibration file (default: RUN_DIR/calibration.json)")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..errors import InvalidInputError
    from ..evidence.calibration import fit_calibration
    from ..evidence.evaluation import labelled
    from ..evidence.runs import run_records

    manifest, records = run_records(args.run_dir, args.run)
    rows, unlabelled = labelled(records)
    pairs = [(r.values[args.score], r.correct) for r in rows if r.values[args.score] is not None]
    if not pairs:
        raise InvalidInputError(
            f"no labelled record of {str(manifest)!r} has a {args.score!r} value; calibrate a labelled run made "
            "with this version (records need query_label, candidate_label and explanation metrics)"
        )
    scores, labels = zip(*pairs)
    calibration = fit_calibration(list(scores), list(labels), method=args.method, score=args.score)
    out = Path(args.out) if args.out else Path(args.run_dir) / "calibration.json"
    calibration.save(out)
    print(f"run: {manifest}")
    print(
        f"calibrated {args.score} ({args.method}) on {calibration.samples} records "
        f"({calibration.positives} correct; {unlabelled} unlabelled and "
        f"{len(rows) - len(pairs)} without a value left out)"
    )
    print(f"calibration: {out}  (set pairx.rerank.calibration to this path and rerank.score: calibrated)")
    return EXIT_OK
