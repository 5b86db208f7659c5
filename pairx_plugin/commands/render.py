"""``pairx-plugin render``: draw PNG panels of stored artifacts on demand (schema 1.2 compact artifacts).

Over a whole store, one run (``--run NAME``) or given artifact ids. Panels go to the store's render
cache ``rendered/<id[:2]>/<id>/<role>.png`` (reused when present; ``--force`` redraws). Panels an
artifact already has as files (rendered eagerly) are listed as they are.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from . import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from ..artifacts.store import ArtifactStore


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..config import ALL_PANELS

    parser = subparsers.add_parser(
        "render",
        help="draw PNG panels of stored artifacts from their stored data",
        description="Render panels (composite, overlays, ...) of compact artifacts into the store's render cache "
        "rendered/<id[:2]>/<id>/. Prints one JSON line per artifact: its id and {role: path}.",
    )
    parser.add_argument("root", metavar="STORE", help="artifact store directory")
    parser.add_argument("--run", metavar="NAME", help="only the artifacts of runs/NAME.jsonl")
    parser.add_argument("--artifact", action="append", default=[], metavar="ID", help="only this artifact (repeatable)")
    parser.add_argument(
        "--panels",
        nargs="+",
        choices=ALL_PANELS,
        default=list(ALL_PANELS),
        metavar="PANEL",
        help=f"panel kinds (default all: {' '.join(ALL_PANELS)})",
    )
    parser.add_argument("--force", action="store_true", help="redraw panels already in the render cache")
    parser.set_defaults(handler=run)
    return parser


def _ids(store: ArtifactStore, args: argparse.Namespace) -> list[str]:
    from ..artifacts.store import read_manifest
    from ..errors import InvalidInputError

    if args.artifact:
        return list(dict.fromkeys(args.artifact))
    if args.run:
        path = store.manifest_path(args.run)
        if not path.is_file():
            raise InvalidInputError(f"run {args.run!r} has no manifest {str(path)!r}; check the run name")
        ids = []
        for entry in read_manifest(path):
            for ref in (entry.record.explanation, *entry.record.other_layers):
                if ref is not None:
                    ids.append(ref.artifact_id)
        return list(dict.fromkeys(ids))
    return list(store.artifact_ids())


def run(args: argparse.Namespace) -> int:
    from ..artifacts.compact import materialize
    from ..artifacts.store import ArtifactStore
    from ..errors import ArtifactError, InvalidInputError

    store = ArtifactStore(args.root)
    if not store.root.is_dir():
        raise InvalidInputError(f"artifact store {str(store.root)!r} does not exist; pass the --out of a run")
    failed = 0
    for identifier in _ids(store, args):
        try:
            images = materialize(store, identifier, args.panels, force=args.force)
        except ArtifactError as exc:
            failed += 1
            print(json.dumps({"artifact_id": identifier, "error": str(exc)}))
            continue
        print(json.dumps({"artifact_id": identifier, "images": images}, sort_keys=True))
    return EXIT_FAILED if failed else EXIT_OK
