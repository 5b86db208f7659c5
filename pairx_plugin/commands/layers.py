"""``pairx-plugin layers``: the layers PAIR-X can explain for a model, default marked with ``*``."""

from __future__ import annotations

import argparse

from ..errors import UnsupportedModelError
from . import EXIT_OK, add_model_arguments, load_bundle


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "layers",
        help="list the candidate layers of a model",
        description="List the layers whose output is a feature map PAIR-X can explain: key, module "
        "type, output shape (C, h, w) at the input size, and stride. The suggested default "
        "is marked with '*'; pass a key to `explain --layer`.",
    )
    add_model_arguments(parser)
    parser.set_defaults(handler=run)
    return parser


def _stride(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def format_table(infos) -> str:
    """A plain-text table of ``LayerInfo`` rows (monospace columns, default marked ``*``)."""
    header = ("", "key", "module type", "output (C, h, w)", "stride")
    rows = [
        (
            "*" if info.is_default else "",
            info.key,
            info.module_type,
            "(" + ", ".join(str(v) for v in info.output_shape) + ")",
            _stride(info.stride),
        )
        for info in infos
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..engine.layers import list_layers

    bundle = load_bundle(args)
    infos = list_layers(bundle.model, bundle.input_size)
    if not infos:
        raise UnsupportedModelError(
            f"model {bundle.name!r} has no layer whose output is a feature map (B, C, h, w) with h, w >= 2 at "
            f"{bundle.input_size} px; PAIR-X needs a convolutional or patch-token stage (try a larger --size)"
        )
    print(f"{bundle.name} at {bundle.input_size}x{bundle.input_size} px ('*' = default layer)")
    print(format_table(infos))
    return EXIT_OK
