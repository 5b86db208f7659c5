"""``pairx-plugin store verify|gc``: check an artifact store, and remove what no run references.

``verify`` exits 1 when any problem is found (each printed on its own line), 0 when every manifest
line's files exist, parse and match their hashes. ``gc`` lists what it would remove (dry run) unless
``--apply`` is given; files younger than ``--min-age`` seconds are kept (a run in progress writes its
artifacts before their manifest lines).
"""

from __future__ import annotations

import argparse

from . import EXIT_FAILED, EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "store",
        help="verify an artifact store or remove files no run references",
        description="Maintain an artifact store (the --out / output_dir of runs).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", title="actions")
    verify = actions.add_parser(
        "verify",
        help="check every manifest line's files (exist, parse, sha256)",
        description="Read every runs/*.jsonl; for each referenced artifact check explanation.json, every listed "
        "file (exists, sha256 matches, PNG/npz decodes) and the shared display images. Exit 1 on "
        "any problem.",
    )
    verify.add_argument("root", metavar="STORE", help="artifact store directory")
    verify.set_defaults(handler=run_verify)
    gc = actions.add_parser(
        "gc",
        help="remove artifacts, shared images and rendered panels no manifest references",
        description="Dry run by default: prints what would be removed and how many bytes. --apply removes it.",
    )
    gc.add_argument("root", metavar="STORE", help="artifact store directory")
    gc.add_argument("--apply", action="store_true", help="really delete (default: only list)")
    gc.add_argument(
        "--min-age",
        type=float,
        default=None,
        metavar="SECONDS",
        help="keep files younger than this (default 3600: a run in progress may still add their manifest lines)",
    )
    gc.set_defaults(handler=run_gc)
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)
    return parser


def run_verify(args: argparse.Namespace) -> int:
    from ..artifacts.maintenance import verify_store

    report = verify_store(args.root)
    for problem in report.problems:
        print(problem)
    verdict = "OK" if report.ok else f"{len(report.problems)} problem(s)"
    print(
        f"{verdict}: {report.runs} run(s), {report.lines} manifest line(s), {report.artifacts} artifact(s), "
        f"{report.shared_images} shared image(s) checked"
    )
    return EXIT_OK if report.ok else EXIT_FAILED


def run_gc(args: argparse.Namespace) -> int:
    from ..artifacts.maintenance import DEFAULT_GC_MIN_AGE_SECONDS, collect_garbage

    min_age = DEFAULT_GC_MIN_AGE_SECONDS if args.min_age is None else max(0.0, args.min_age)
    report = collect_garbage(args.root, apply=args.apply, min_age_seconds=min_age)
    verb = "removed" if report.applied else "would remove"
    for path in report.paths:
        print(f"{verb} {path}")
    print(
        f"{verb} {len(report.artifacts)} artifact(s), {len(report.shared_images)} shared image(s), "
        f"{len(report.rendered)} rendered dir(s): {report.bytes} bytes"
        + ("" if report.applied else " (dry run; pass --apply to delete)")
    )
    return EXIT_OK
