"""Built-in ``pairx-plugin`` subcommands, one module each, and the helpers they share.

A command module exposes ``register(subparsers)``: it adds its parser with
``subparsers.add_parser(name, help=..., description=...)`` and sets ``handler`` with
``parser.set_defaults(handler=run)``, where ``run(args: argparse.Namespace) -> int`` returns the exit
code. Adapters contribute commands the same way through the entry-point group
``pairx_plugin.commands`` (see :mod:`pairx_plugin.cli`). A handler reports bad input by raising a
:class:`~pairx_plugin.errors.PairXError`; the CLI prints it as one line and exits with code 2.
"""

from __future__ import annotations

import argparse

from ..config import DEVICE_PATTERN
from ..errors import InvalidInputError

EXIT_OK = 0
EXIT_FAILED = 1  # the input was fine but the work failed (an engine or internal error)
EXIT_BAD_INPUT = 2  # the user can fix it: a file, a spec, an option, the output directory


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def device_name(text: str) -> str:
    """argparse type: auto, cpu, cuda or cuda:N."""
    value = text.strip().lower()
    if not DEVICE_PATTERN.match(value):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return value


def resolve_device(name: str):  # noqa: ANN201 - kept for one release; returns a torch.device
    """Kept for one release: :func:`pairx_plugin.config.resolve_device` without a model, for ``--device``.

    The CLI builds the model itself, so unlike a host pipeline it may choose where the model lives:
    ``auto`` is the first GPU when there is one, else the CPU.
    """
    from ..config import resolve_device as resolve

    return resolve(name, key="--device")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model SPEC``, ``--weights FILE`` and ``--size N`` (shared by commands that load a model)."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default="builtin",
        metavar="SPEC",
        help="'builtin' (ImageNet EfficientNet-Lite0, the default), 'timm:NAME' (e.g. timm:resnet18), "
        "'hf-hub:ORG/NAME' (cached timm hub model), 'local-dir:PATH', 'transformers:DIR_OR_ID', "
        "'miewid[BACKBONE]:PATH' or 'module:callable' returning an nn.Module (see docs/models.md)",
    )
    group.add_argument(
        "--weights", metavar="FILE", help="state dict to load into the model (torch.save of state_dict())"
    )
    group.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let a transformers: model run its own Python code (config.json auto_map, e.g. MiewID)",
    )
    group.add_argument(
        "--size",
        type=positive_int,
        metavar="N",
        help="square input size in pixels (default: the model's own, 224 for the built-in)",
    )
    group.add_argument(
        "--device",
        type=device_name,
        metavar="DEVICE",
        help="auto (a GPU when there is one), cpu, cuda or cuda:N (default: auto, or the --config file's device)",
    )


def load_bundle(args: argparse.Namespace, device: str | None = None):
    """The :class:`~pairx_plugin.models.ModelBundle` the model options name, ``--size`` applied, and
    the model moved to ``device`` (default ``--device``, else auto)."""
    from dataclasses import replace

    from ..models import load_model_spec

    if args.size is not None and args.size < 32:
        raise InvalidInputError(f"--size {args.size} is too small for a CNN; use at least 32 (e.g. 224)")
    target = resolve_device(device or getattr(args, "device", None) or "auto")  # before the slow load
    bundle = load_model_spec(
        args.model, weights=args.weights, trust_remote_code=bool(getattr(args, "trust_remote_code", False))
    )
    if args.size is not None:
        bundle = replace(bundle, input_size=int(args.size))
    bundle.model.to(target)
    return bundle
