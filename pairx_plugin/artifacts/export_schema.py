"""Write (or check) the JSON Schemas under ``docs/schema/``, generated from the pydantic models.

python -m pairx_plugin.artifacts.export_schema            # rewrite docs/schema/*.schema.json
python -m pairx_plugin.artifacts.export_schema --check    # exit 1 if a checked-in file is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .schema import json_schemas

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "docs" / "schema"


def schema_text(schema: dict[str, Any]) -> str:
    """The exact text written for ``schema`` (stable key order, trailing newline)."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def stale_files(directory: Path) -> list[str]:
    """Names of schema files in ``directory`` that are missing or differ from the generated text."""
    stale = []
    for name, schema in json_schemas().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != schema_text(schema):
            stale.append(name)
    return stale


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / name
        path.write_text(schema_text(schema), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pairx_plugin.artifacts.export_schema",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="output folder (default: docs/schema)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a file is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.dir)
        for name in stale:
            print(f"stale: {args.dir / name} (regenerate with python -m pairx_plugin.artifacts.export_schema)")
        return 1 if stale else 0
    for path in write_schemas(args.dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
