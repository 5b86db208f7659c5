"""``pairx-plugin decisions``: hand curator decisions from the review page back to a metadata table.

``decisions apply FILE --metadata CSV --out CSV`` writes a wildlife-tools style metadata table (columns
``image_id`` and ``identity`` at least) with each query judged *same* as a candidate relabelled to
the candidate's identity; ``--pairs-out`` also writes the decided pairs as a labels table.
``decisions schema`` prints (or ``--write`` / ``--check``) the decision file's JSON Schema.
WBIA hosts apply decisions through their controller: ``wbia_pairx.decisions.apply_decisions(ibs, ...)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK

DEFAULT_SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schema"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "decisions",
        help="apply curator decisions (exported from the review page) to a metadata table",
        description="Work with a decisions file exported from the review page (JSON Lines, one decision "
        "per line; the latest decision per record counts).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", title="actions")
    apply = actions.add_parser(
        "apply",
        help="write a metadata CSV with the decided identities",
        description="Relabel each query judged 'same' as a candidate with the candidate's identity and write "
        "the whole table to --out (every other row and column unchanged). Stops with exit 2, "
        "writing nothing, when a decision names an id the table lacks or one query was judged "
        "the same as two identities.",
    )
    apply.add_argument("decisions", metavar="FILE", help="decisions file (.jsonl) exported from the review page")
    apply.add_argument("--metadata", required=True, metavar="CSV", help="metadata table to update (not modified)")
    apply.add_argument("--out", required=True, metavar="CSV", help="where to write the updated table")
    apply.add_argument("--pairs-out", metavar="CSV", help="also write the decided pairs as a labels table")
    apply.add_argument("--id-column", default="image_id", help="column of image ids (default: image_id)")
    apply.add_argument("--identity-column", default="identity", help="column of identities (default: identity)")
    apply.set_defaults(handler=run_apply)
    schema = actions.add_parser("schema", help="print, write or check the decision file's JSON Schema")
    mode = schema.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write it to --dir")
    mode.add_argument("--check", action="store_true", help="exit 1 when the file in --dir is missing or stale")
    schema.add_argument("--dir", type=Path, default=DEFAULT_SCHEMA_DIR, help="schema folder (default: docs/schema)")
    schema.set_defaults(handler=run_schema)
    parser.set_defaults(handler=lambda args: (parser.print_help(sys.stderr), EXIT_BAD_INPUT)[1])
    return parser


def run_apply(args: argparse.Namespace) -> int:
    from ..decisions import apply_to_metadata_csv, read_decisions, write_pairs_csv
    from ..errors import InvalidInputError

    decisions = read_decisions(args.decisions)
    if not decisions:
        raise InvalidInputError(f"decisions file {args.decisions!r} holds no decisions; decide some records first")
    if Path(args.out).resolve() == Path(args.metadata).resolve():
        raise InvalidInputError("--out must differ from --metadata (the original table is kept as it was)")
    plan = apply_to_metadata_csv(
        decisions, args.metadata, args.out, id_column=args.id_column, identity_column=args.identity_column
    )
    if args.pairs_out:
        write_pairs_csv(decisions, args.pairs_out)
    for image_id, identity in sorted(plan.updates.items()):
        before = plan.previous.get(image_id) or "(unknown)"
        print(f"relabelled {image_id}: {before} -> {identity}")
    for line in plan.contradictions:
        print(f"note: {line} (labels left as they are)")
    print(f"{len(plan.updates)} relabelled, {plan.unused} decisions changed no label; wrote {args.out}")
    return EXIT_OK


def run_schema(args: argparse.Namespace) -> int:
    from ..decisions import DECISION_SCHEMA_NAME, decision_schema_text

    text = decision_schema_text()
    path = args.dir / DECISION_SCHEMA_NAME
    if args.check:
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            print(f"stale: {path} (regenerate with pairx-plugin decisions schema --write)")
            return EXIT_FAILED
        return EXIT_OK
    if args.write:
        args.dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
        return EXIT_OK
    sys.stdout.write(text)
    return EXIT_OK
