"""``pairx-plugin evaluate RUN_DIR``: how well the host score and every PAIR-X number separate right from wrong.

Reads the run's manifest (records with their labels and metrics), prints AUROC overall and within
host-score bins, top-1 before and after re-ranking, and writes ``evaluation.png`` (ROC curves and a
reliability diagram) and ``evaluation.json`` next to the review page.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from . import EXIT_OK, positive_int


def add_rerank_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("re-ranking measured (pairx.rerank; the run is not changed)")
    group.add_argument(
        "--score",
        default="evidence",
        choices=["evidence", "calibrated", "irm", "mc", "inlier_ratio", "match_count"],
        help="number fused with the host rank (default: evidence)",
    )
    group.add_argument("--alpha", type=float, default=None, help="weight of the host rank, 0..1 (default 0.3)")
    group.add_argument(
        "--shortlist-k", type=positive_int, default=None, help="candidates re-ordered per query (default 5)"
    )
    group.add_argument(
        "--calibration", metavar="FILE", help="calibration file (from `calibrate`) for --score calibrated"
    )


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="AUROC of every number, top-1 before/after re-ranking, ROC + reliability plot",
        description="Evaluate a labelled run: AUROC of the host score and of every PAIR-X number for correct vs "
        "incorrect records (overall and within host-score bins), top-1 before and after re-ranking, "
        "and a PNG of ROC curves and a reliability diagram next to the review page.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="output directory of a run (holds runs/*.jsonl)")
    parser.add_argument("--run", metavar="NAME", help="manifest runs/NAME.jsonl (default: the newest)")
    parser.add_argument("--bins", type=positive_int, default=4, help="host-score quantile bins (default 4)")
    parser.add_argument("--out", metavar="DIR", help="where evaluation.png/.json go (default: RUN_DIR)")
    add_rerank_arguments(parser)
    parser.set_defaults(handler=run)
    return parser


def rerank_config(args: argparse.Namespace):
    from pydantic import ValidationError

    from ..errors import InvalidInputError
    from ..evidence.models import RerankConfig

    values = {"enabled": True, "score": args.score, "calibration": args.calibration}
    if args.alpha is not None:
        values["alpha"] = args.alpha
    if args.shortlist_k is not None:
        values["shortlist_k"] = args.shortlist_k
    try:
        return RerankConfig(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInputError(f"re-ranking options: {problems}") from None


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..evidence.calibration import load_calibration
    from ..evidence.evaluation import (
        evaluate_records,
        labelled,
        report_lines,
        roc_curve_points,
    )
    from ..evidence.plots import CURVES, write_evaluation_plot
    from ..evidence.runs import run_records

    manifest, records = run_records(args.run_dir, args.run)
    config = rerank_config(args)
    calibration = load_calibration(config.calibration) if config.calibration else None
    evaluation = evaluate_records(records, bins=args.bins, rerank=config, calibration=calibration)
    print(f"run: {manifest}")
    for line in report_lines(evaluation):
        print(line)
    out = Path(args.out) if args.out else Path(args.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, _ = labelled(records)
    truth = np.array([r.correct for r in rows])
    curves = []
    for name, _ in CURVES:
        values = np.array(
            [
                r.host_score if name == "host_score" else (np.nan if r.values[name] is None else r.values[name])
                for r in rows
            ],
            float,
        )
        if np.isnan(values).all() or truth.all() or not truth.any():
            continue
        fpr, tpr = roc_curve_points(values, truth)
        curves.append((name, fpr, tpr, evaluation.metric(name).auroc))
    label = "calibrated evidence" if calibration is not None else "evidence score"
    plot = write_evaluation_plot(out / "evaluation.png", curves, evaluation.reliability, label)
    summary = asdict(evaluation) | {"rerank": evaluation.rerank.model_dump(), "manifest": str(manifest)}
    (out / "evaluation.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(f"plot: {plot}")
    return EXIT_OK
